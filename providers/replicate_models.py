"""Replicate models as data: the catalogue in `replicate_models.json`, and each model's own schema.

A catalogue row says how our request becomes one model's input (its names for the prompt, the
image, the seed; seconds as a duration or a frame count; a size as `W*H`, labels, or two
integers) and what it costs. The model's OpenAPI schema on Replicate (`Input` under
`latest_version.openapi_schema.components.schemas`) is the authority on what it accepts: before a
create is sent the input is checked against it (names, enums, ranges, required fields), so a
catalogue row that drifted from the model is one clear refusal, not a failed, billed prediction.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from providers.errors import InvalidRequest

CATALOGUE_PATH = Path(__file__).with_name("replicate_models.json")
_SIZE_STYLES = (
    {"param", "format"}, {"resolution"}, {"aspect_ratio"}, {"aspect_ratio", "resolution"}, {"width", "height"}, {"aspect_ratio", "long_side"},
)


@dataclass(frozen=True)
class Duration:
    param: str
    choices: tuple[int, ...]
    frames_per_second: int | None = None
    extra_frames: int = 0
    fps_param: str | None = None

    def arguments(self, seconds: int) -> dict[str, Any]:
        if not self.frames_per_second:
            return {self.param: seconds}
        out: dict[str, Any] = {self.param: seconds * self.frames_per_second + self.extra_frames}
        if self.fps_param:
            out[self.fps_param] = self.frames_per_second
        return out


@dataclass(frozen=True)
class ModelRow:
    model: str
    title: str
    duration: Duration
    sizes: tuple[str, ...]
    size: dict[str, str]
    prompt: str | None = "prompt"
    image: str | None = None
    image_required: bool = False
    seed: str | None = None
    negative_prompt: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    per_second: float | None = None
    per_second_by_resolution: dict[str, float] = field(default_factory=dict)
    per_run: float | None = None

    def size_arguments(self, width: int, height: int) -> dict[str, Any]:
        """The size as this model takes it; the caller has checked it is one of `sizes`."""
        style = self.size
        if "format" in style:
            return {style["param"]: style["format"].format(w=width, h=height)}
        if "width" in style:
            return {style["width"]: width, style["height"]: height}
        out: dict[str, Any] = {}
        if "aspect_ratio" in style:
            out[style["aspect_ratio"]] = ratio_label(width, height)
        if "resolution" in style:
            out[style["resolution"]] = f"{min(width, height)}p"
        if "long_side" in style:
            out[style["long_side"]] = max(width, height)
        return out

    def check_size(self, size: str) -> None:
        if size.lower() not in self.sizes:
            raise InvalidRequest(f"Replicate's {self.model} makes videos of size {listing(list(self.sizes))}.")

    def check_seconds(self, seconds: int) -> None:
        if seconds not in self.duration.choices:
            raise InvalidRequest(f"Replicate's {self.model} makes clips of {listing([str(s) for s in self.duration.choices])} seconds.")


@dataclass(frozen=True)
class Catalogue:
    path: Path
    rows: dict[str, ModelRow]
    #: Text-to-image models (their `duration` is empty).
    images: dict[str, ModelRow] = field(default_factory=dict)

    def row(self, model: str) -> ModelRow | None:
        return self.rows.get(model.split(":", 1)[0])

    def image_row(self, model: str) -> ModelRow | None:
        return self.images.get(model.split(":", 1)[0])


def load_catalogue(path: Path | str | None = None) -> Catalogue:
    """The catalogue at `path` (the shipped one by default); a bad file is a ValueError naming the row."""
    return _load(Path(path) if path else CATALOGUE_PATH)


@lru_cache(maxsize=8)
def _load(path: Path) -> Catalogue:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the Replicate model catalogue {path}: {exc}") from None
    items = data.get("models") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError(f"the Replicate model catalogue {path} has no 'models' list")
    lists: dict[str, dict[str, ModelRow]] = {"models": {}, "images": {}}
    for key, found in lists.items():
        for index, item in enumerate(data.get(key) or []):
            name = item.get("model", f"#{index + 1}") if isinstance(item, dict) else f"#{index + 1}"
            try:
                row = _row(item, image=key == "images")
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"Replicate model catalogue {path}, row '{name}': {exc}") from None
            found[row.model] = row
    return Catalogue(path=path, rows=lists["models"], images=lists["images"])


def _row(item: dict[str, Any], *, image: bool = False) -> ModelRow:
    model = str(item["model"])
    if model.count("/") != 1 or ":" in model:
        raise ValueError("'model' must be owner/name")
    spec = item["duration"] if not image else {"param": "", "choices": [1]}
    duration = Duration(
        param=str(spec["param"]), choices=tuple(int(c) for c in spec["choices"]),
        frames_per_second=spec.get("frames_per_second"), extra_frames=int(spec.get("extra_frames", 0)),
        fps_param=spec.get("fps_param"),
    )  # fmt: skip
    if not duration.choices or min(duration.choices) < 1:
        raise ValueError("'duration.choices' must list whole seconds")
    size = {str(k): str(v) for k, v in item["size"].items()}
    if set(size) not in _SIZE_STYLES:
        raise ValueError(f"'size' must have the keys of one of {[sorted(s) for s in _SIZE_STYLES]}")
    sizes = tuple(str(s).lower() for s in item["sizes"])
    for s in sizes:
        w, _, h = s.partition("x")
        if not (w.isdigit() and h.isdigit()):
            raise ValueError(f"size '{s}' is not WxH")
    price = item.get("price") or {}
    per_second, per_run = price.get("per_second"), price.get("per_run")
    if per_second is None and per_run is None:
        raise ValueError("'price' needs per_second or per_run (an unpriced model is refused)")
    return ModelRow(
        model=model, title=str(item.get("title", model)), duration=duration, sizes=sizes, size=size,
        prompt=item.get("prompt", "prompt"), image=item.get("image"), image_required=bool(item.get("image_required")),
        seed=item.get("seed"),
        negative_prompt=item.get("negative_prompt"), fixed=dict(item.get("fixed", {})),
        per_second=float(per_second) if per_second is not None else None,
        per_second_by_resolution={str(k): float(v) for k, v in (price.get("per_second_by_resolution") or {}).items()},
        per_run=float(per_run) if per_run is not None else None,
    )  # fmt: skip


# --- the model's own schema -----------------------------------------------------------------------


@dataclass(frozen=True)
class InputSchema:
    """The `Input` object of a model version's OpenAPI schema, with `$ref`s resolved."""

    properties: dict[str, dict[str, Any]]
    required: tuple[str, ...]

    @classmethod
    def from_openapi(cls, openapi: dict[str, Any]) -> InputSchema | None:
        schemas = (openapi.get("components") or {}).get("schemas") or {}
        raw = schemas.get("Input")
        if not isinstance(raw, dict):
            return None
        properties = {name: _resolve(prop, schemas) for name, prop in (raw.get("properties") or {}).items()}
        return cls(properties=properties, required=tuple(raw.get("required") or ()))

    def problems(self, arguments: dict[str, Any]) -> list[str]:
        """What in `arguments` the model would refuse, as short lines naming the field."""
        out = [f"{name} is not an input of this model" for name in arguments if name not in self.properties]
        out += [f"{name} is required" for name in self.required if name not in arguments]
        for name, value in arguments.items():
            prop = self.properties.get(name)
            if prop is not None and (problem := _check(value, prop)):
                out.append(f"{name} {problem}")
        return out


def _resolve(prop: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """Cog writes enums as `allOf: [{$ref: '#/components/schemas/size'}]`: merge them in."""
    merged = {k: v for k, v in prop.items() if k != "allOf"}
    for part in prop.get("allOf") or []:
        ref = part.get("$ref", "") if isinstance(part, dict) else ""
        target = schemas.get(ref.rsplit("/", 1)[-1]) if ref.startswith("#/components/schemas/") else part
        if isinstance(target, dict):
            merged = {**target, **merged}
    return merged


def _check(value: Any, prop: dict[str, Any]) -> str | None:
    if "enum" in prop and value not in prop["enum"]:
        return "must be one of " + ", ".join(str(v) for v in prop["enum"])
    kind = prop.get("type")
    if kind == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        return "must be an integer"
    if kind == "number" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        return "must be a number"
    if kind == "boolean" and not isinstance(value, bool):
        return "must be true or false"
    if kind == "string" and not isinstance(value, str):
        return "must be text"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in prop and value < prop["minimum"]:
            return f"must be at least {prop['minimum']}"
        if "maximum" in prop and value > prop["maximum"]:
            return f"must be at most {prop['maximum']}"
    return None


def is_file_input(prop: dict[str, Any] | None) -> bool:
    return bool(prop) and prop.get("type") == "string" and prop.get("format") == "uri"  # type: ignore[union-attr]


# --- sizes ------------------------------------------------------------------------------------


_LABELS = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9", "9:21", "4:5", "5:4")


def ratio_label(width: int, height: int) -> str:
    """The common aspect-ratio label nearest a size, within 3 % (1344x768 is sold as 16:9), else W:H."""
    actual = width / height
    best = min(_LABELS, key=lambda label: abs(_value(label) - actual) / _value(label))
    if abs(_value(best) - actual) / _value(best) <= 0.03:
        return best
    g = math.gcd(width, height)
    return f"{width // g}:{height // g}"


def _value(label: str) -> float:
    w, h = (int(v) for v in label.split(":"))
    return w / h


def listing(values: list[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + f" or {values[-1]}"
