"""ComfyUI API-format workflows: loaded once, checked at start-up, filled per job.

A workflow is the JSON ComfyUI writes with "Export (API)": node id -> {class_type, inputs,
_meta.title}. We never rely on node ids (they change whenever someone edits the graph); the
inputs we set are found by node title, `videobot.prompt`, `videobot.width` and so on. A
workflow that lacks a title its kind needs is refused when it is loaded, with one line naming
the file and the title, so a broken workflow stops start-up instead of failing a user's job.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from providers.errors import NotConfigured

SHIPPED_DIR = Path(__file__).with_name("comfyui_workflows")
DOCS = "docs/comfyui.md"

PROMPT = "videobot.prompt"
NEGATIVE = "videobot.negative"
IMAGE = "videobot.image"
SEED = "videobot.seed"
WIDTH = "videobot.width"
HEIGHT = "videobot.height"
FRAMES = "videobot.frames"
FPS = "videobot.fps"
OUTPUT = "videobot.output"

#: For each title, the input names it may set, best first. A titled node must have one of
#: them as a plain value (not a link); `value` is what ComfyUI's Primitive* nodes call it.
INPUT_NAMES: dict[str, tuple[str, ...]] = {
    PROMPT: ("text", "prompt", "positive_prompt", "string", "value"),
    NEGATIVE: ("text", "negative_prompt", "prompt", "string", "value"),
    IMAGE: ("image",),
    SEED: ("seed", "noise_seed", "value"),
    WIDTH: ("width", "value"),
    HEIGHT: ("height", "value"),
    FRAMES: ("length", "frames", "num_frames", "frame_count", "video_length", "value"),
    FPS: ("fps", "frame_rate", "value"),
}


class WorkflowKind(StrEnum):
    TEXT_TO_VIDEO = "text-to-video"
    IMAGE_TO_VIDEO = "image-to-video"
    TEXT_TO_IMAGE = "text-to-image"


REQUIRED: dict[WorkflowKind, tuple[str, ...]] = {
    WorkflowKind.TEXT_TO_VIDEO: (PROMPT, WIDTH, HEIGHT, FRAMES, FPS, OUTPUT),
    WorkflowKind.IMAGE_TO_VIDEO: (PROMPT, IMAGE, WIDTH, HEIGHT, FRAMES, FPS, OUTPUT),
    WorkflowKind.TEXT_TO_IMAGE: (PROMPT, WIDTH, HEIGHT, OUTPUT),
}
OPTIONAL = (NEGATIVE, SEED)

#: ComfyUI's KSampler takes seeds up to 2**64 - 1; Primitive nodes and most samplers are
#: happy with anything below 2**53, which also survives JSON in every language.
MAX_SEED = 2**53 - 1


class WorkflowError(NotConfigured):
    """A workflow file cannot be used; the message is one line naming the file and the reason.

    Raised while settings are turned into pipelines; the bot turns it into a start-up error.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"ComfyUI workflow {path}: {reason}", provider="comfyui")
        self.path = path


@dataclass(frozen=True)
class Slot:
    """One input we set: node id and input name."""

    node: str
    input: str


@dataclass
class Workflow:
    path: Path
    kind: WorkflowKind
    graph: dict[str, dict[str, Any]]
    #: title -> the inputs it sets (a title may sit on several nodes, e.g. two samplers' seeds).
    slots: dict[str, list[Slot]] = field(default_factory=dict)
    output_node: str = ""
    #: The frame rate the workflow renders at (the `videobot.fps` node's value); frames = seconds x fps.
    fps: float = 0.0

    @property
    def name(self) -> str:
        """A short label for job rows and stats: the file name without `.json`."""
        return self.path.stem

    def fill(self, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """A copy of the graph with every titled input set; titles without a value keep the file's."""
        graph = copy.deepcopy(self.graph)
        for title, value in values.items():
            for slot in self.slots.get(title, []):
                graph[slot.node]["inputs"][slot.input] = value
        return graph


def resolve(name: str, directory: Path | None) -> Path:
    """A setting's workflow: an absolute path as is, else in COMFYUI_WORKFLOWS_DIR, else shipped."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    if directory is not None:
        return directory.expanduser() / path
    return SHIPPED_DIR / path


def load_workflow(path: Path, kind: WorkflowKind) -> Workflow:
    """Read and check one workflow; raises WorkflowError naming the file and what is wrong."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkflowError(path, "file not found.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(path, f"cannot be read ({exc}).") from None
    except json.JSONDecodeError as exc:
        raise WorkflowError(path, f"is not JSON (line {exc.lineno}: {exc.msg}).") from None
    graph = _api_graph(path, raw)
    workflow = Workflow(path=path, kind=kind, graph=graph)
    titled: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        title = str((node.get("_meta") or {}).get("title") or "").strip()
        if title.startswith("videobot."):
            titled.setdefault(title, []).append(node_id)
    unknown = sorted(set(titled) - set(INPUT_NAMES) - {OUTPUT})
    if unknown:
        raise WorkflowError(path, f"unknown title '{unknown[0]}' (the titles are listed in {DOCS}).")
    for title in REQUIRED[kind]:
        if title not in titled:
            raise WorkflowError(
                path, f"no node is titled '{title}', which a {kind.value} workflow needs (see {DOCS})."
            )
    for title in (*REQUIRED[kind], *OPTIONAL):
        if title == OUTPUT or title not in titled:
            continue
        workflow.slots[title] = [_slot(path, graph, node_id, title) for node_id in titled[title]]
    outputs = titled[OUTPUT]
    if len(outputs) > 1:
        raise WorkflowError(path, f"{len(outputs)} nodes are titled '{OUTPUT}' (nodes {', '.join(outputs)}); title one.")
    workflow.output_node = outputs[0]
    if FPS in workflow.slots:
        slot = workflow.slots[FPS][0]
        fps = graph[slot.node]["inputs"][slot.input]
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 240:
            raise WorkflowError(path, f"the '{FPS}' node's {slot.input} is {fps!r}, not a frame rate.")
        workflow.fps = float(fps)
    return workflow


def _api_graph(path: Path, raw: object) -> dict[str, dict[str, Any]]:
    if isinstance(raw, dict) and isinstance(raw.get("nodes"), list) and "links" in raw:
        raise WorkflowError(path, "is a UI workflow; save it from ComfyUI with Workflow > Export (API).")
    if not isinstance(raw, dict) or not raw:
        raise WorkflowError(path, "is not an API-format workflow (an object of node id -> node).")
    for node_id, node in raw.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) or not isinstance(node.get("inputs"), dict):
            raise WorkflowError(path, f"node {node_id} has no class_type and inputs; export the workflow with Export (API).")
    return raw


def _slot(path: Path, graph: dict[str, dict[str, Any]], node_id: str, title: str) -> Slot:
    node = graph[node_id]
    inputs = node["inputs"]
    for name in INPUT_NAMES[title]:
        if name in inputs and not _is_link(inputs[name]):
            return Slot(node_id, name)
    wanted = ", ".join(INPUT_NAMES[title])
    raise WorkflowError(
        path,
        f"the node titled '{title}' (node {node_id}, {node['class_type']}) has no input to set ({wanted}); "
        "put the title on the node that holds the value, or on a Primitive node wired into it.",
    )


def _is_link(value: object) -> bool:
    # In API format a wired input is [source node id, output index].
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def title_of(node: dict[str, Any]) -> str:
    return str((node.get("_meta") or {}).get("title") or "")


def find_titled(graph: dict[str, Any], title: str) -> str | None:
    """The id of the node with this title in a graph (e.g. one read back from /history)."""
    for node_id, node in graph.items():
        if isinstance(node, dict) and title_of(node) == title:
            return node_id
    return None
