"""fal endpoint families as data: the table in `fal_endpoints.json` and what it says.

Each family names its inputs differently (`duration: "5"` for Kling, `"8s"` for Veo, a frame
count for Wan 2.2; `image_url`, or another name, for the image). A row of the table says how
one family takes our request; the provider only reads rows, so a new family is a new row.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import Any

from providers.errors import InvalidRequest

TABLE_PATH = Path(__file__).with_name("fal_endpoints.json")


@dataclass(frozen=True)
class Duration:
    """How seconds reach a family: a choice, formatted (`"5"`, `"8s"`, 6), or a frame count."""

    param: str | None
    choices: tuple[int, ...]
    format: str | None = None
    frames_per_second: int | None = None
    extra_frames: int = 0
    fps_param: str | None = None

    def arguments(self, seconds: int) -> dict[str, Any]:
        if self.param is None:
            return {}
        if self.frames_per_second:
            out: dict[str, Any] = {self.param: seconds * self.frames_per_second + self.extra_frames}
            if self.fps_param:
                out[self.fps_param] = self.frames_per_second
            return out
        return {self.param: self.format.format(seconds) if self.format else seconds}


@dataclass(frozen=True)
class Choice:
    """A parameter with allowed values; `param` None: fixed by the model (checked, not sent)."""

    param: str | None
    choices: tuple[str, ...]


@dataclass(frozen=True)
class Family:
    name: str
    match: tuple[str, ...]
    duration: Duration
    #: The input image's parameter; None for a text-to-video family.
    image: str | None = None
    aspect_ratio: Choice | None = None
    resolution: Choice | None = None
    negative_prompt: str | None = None
    seed: str | None = None
    audio: str | None = None
    prompt_param: str = "prompt"
    prompt_max: int = 2000
    fixed: dict[str, Any] = field(default_factory=dict)
    #: Dotted path of the video URL in the result JSON.
    output: str = "video.url"

    def matches(self, endpoint: str) -> bool:
        return any(fnmatchcase(endpoint, pattern) for pattern in self.match)

    def resolution_for(self, width: int, height: int) -> str | None:
        """The resolution label whose short side the size has (1280x720 -> "720p")."""
        if self.resolution is None:
            return None
        return next((r for r in self.resolution.choices if short_side(r) == min(width, height)), None)

    def size_arguments(self, endpoint: str, width: int, height: int) -> dict[str, Any]:
        """The aspect ratio and resolution parameters for a size, or why it cannot be made."""
        out: dict[str, Any] = {}
        short = min(width, height)
        ratio = size_to_ratio(width, height)
        if self.aspect_ratio is not None:
            ratio = nearest_ratio(width, height, self.aspect_ratio.choices) or ratio
            if ratio not in self.aspect_ratio.choices:
                shorts = [short_side(r) for r in self.resolution.choices] if self.resolution else [720]
                pick = short if short in shorts else shorts[0]
                sizes = [size_for(r, pick) for r in self.aspect_ratio.choices]
                raise InvalidRequest(
                    f"fal's {endpoint} makes {listing(list(self.aspect_ratio.choices))} videos: "
                    f"ask for a size such as {listing(sizes)}."
                )
            if self.aspect_ratio.param:
                out[self.aspect_ratio.param] = ratio
        if self.resolution is not None:
            label = self.resolution_for(width, height)
            if label is None:
                sizes = [size_for(ratio, short_side(r)) for r in self.resolution.choices]
                raise InvalidRequest(
                    f"fal's {endpoint} makes {listing(list(self.resolution.choices))} videos: "
                    f"ask for a size such as {listing(sizes)}."
                )
            if self.resolution.param:
                out[self.resolution.param] = label
        return out


@dataclass(frozen=True)
class EndpointTable:
    path: Path
    families: tuple[Family, ...]
    prices: dict[str, float]

    def family(self, endpoint: str) -> Family | None:
        return next((f for f in self.families if f.matches(endpoint)), None)

    def refusal(self, endpoint: str) -> InvalidRequest:
        return InvalidRequest(
            f"The fal endpoint '{endpoint}' is not in the fal endpoint table ({self.path}), so its inputs "
            "are not known. An admin can add a row for its family there (or in FAL_ENDPOINTS_FILE)."
        )


def load_table(path: Path | str | None = None) -> EndpointTable:
    """The table at `path` (the shipped one by default); a bad file is a ValueError naming the row."""
    return _load_table(Path(path) if path else TABLE_PATH)


@lru_cache(maxsize=8)
def _load_table(path: Path) -> EndpointTable:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the fal endpoint table {path}: {exc}") from None
    rows = data.get("families") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"the fal endpoint table {path} has no 'families' list")
    families = []
    for index, row in enumerate(rows):
        try:
            families.append(_family(row))
        except (KeyError, TypeError, ValueError) as exc:
            name = row.get("family", f"#{index + 1}") if isinstance(row, dict) else f"#{index + 1}"
            raise ValueError(f"fal endpoint table {path}, row '{name}': {exc}") from None
    prices = data.get("prices", {})
    if not isinstance(prices, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in prices.values()):
        raise ValueError(f"fal endpoint table {path}: 'prices' must map endpoint ids to USD per second")
    return EndpointTable(path=path, families=tuple(families), prices={str(k): float(v) for k, v in prices.items()})


def _family(row: dict[str, Any]) -> Family:
    match = row["match"]
    if isinstance(match, str):
        match = [match]
    if not match or not all(isinstance(m, str) and m for m in match):
        raise ValueError("'match' must be one or more endpoint id globs")
    spec = row["duration"]
    choices = tuple(int(c) for c in spec["choices"])
    if not choices or min(choices) < 1:
        raise ValueError("'duration.choices' must list whole seconds")
    duration = Duration(
        param=spec.get("param"), choices=choices, format=spec.get("format"),
        frames_per_second=spec.get("frames_per_second"), extra_frames=int(spec.get("extra_frames", 0)),
        fps_param=spec.get("fps_param"),
    )  # fmt: skip
    return Family(
        name=str(row["family"]),
        match=tuple(match),
        duration=duration,
        image=row.get("image"),
        aspect_ratio=_choice(row.get("aspect_ratio"), "aspect_ratio"),
        resolution=_choice(row.get("resolution"), "resolution"),
        negative_prompt=row.get("negative_prompt"),
        seed=row.get("seed"),
        audio=row.get("audio"),
        prompt_param=row.get("prompt_param", "prompt"),
        prompt_max=int(row.get("prompt_max", 2000)),
        fixed=dict(row.get("fixed", {})),
        output=row.get("output", "video.url"),
    )


def _choice(spec: dict[str, Any] | None, what: str) -> Choice | None:
    if spec is None:
        return None
    choices = tuple(str(c) for c in spec["choices"])
    if not choices:
        raise ValueError(f"'{what}.choices' is empty")
    if what == "aspect_ratio" and not all(re.fullmatch(r"\d+:\d+", c) for c in choices):
        raise ValueError(f"'{what}.choices' must be W:H ratios")
    if what == "resolution" and not all(re.match(r"\d+", c) for c in choices):
        raise ValueError(f"'{what}.choices' must start with the short side in pixels (720p)")
    return Choice(param=spec.get("param"), choices=choices)


# --- sizes ------------------------------------------------------------------------------------


def size_to_ratio(width: int, height: int) -> str:
    g = math.gcd(width, height)
    return f"{width // g}:{height // g}"


def nearest_ratio(width: int, height: int, choices: tuple[str, ...]) -> str | None:
    """The allowed ratio a size has, within rounding (854x480 is 16:9)."""
    for choice in choices:
        w, h = (int(v) for v in choice.split(":"))
        if abs(width / height - w / h) <= 0.01 * (w / h):
            return choice
    return None


def short_side(label: str) -> int:
    m = re.match(r"\d+", label)
    return int(m.group(0)) if m else 0


def size_for(ratio: str, short: int) -> str:
    w, h = (int(v) for v in ratio.split(":"))
    if w >= h:
        return f"{_even(short * w / h)}x{short}"
    return f"{short}x{_even(short * h / w)}"


def _even(value: float) -> int:
    return int(round(value / 2) * 2)


def listing(values: list[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + f" or {values[-1]}"


def span(values: tuple[int, ...]) -> str:
    ordered = sorted(values)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]} to {ordered[-1]}"
    return listing([str(v) for v in ordered])


def default_seconds(family: Family | None) -> int:
    """The choice nearest five seconds (a pipeline's default when a command names none)."""
    if family is None:
        return 5
    return min(family.duration.choices, key=lambda s: (abs(s - 5), s))


def default_size(family: Family | None) -> str:
    """1280x720 when the family makes it, else its smallest resolution in its first ratio."""
    if family is None:
        return "1280x720"
    ratio = "16:9"
    if family.aspect_ratio is not None and ratio not in family.aspect_ratio.choices:
        ratio = family.aspect_ratio.choices[0]
    shorts = sorted(short_side(r) for r in family.resolution.choices) if family.resolution else [720]
    return size_for(ratio, 720 if 720 in shorts else shorts[0])
