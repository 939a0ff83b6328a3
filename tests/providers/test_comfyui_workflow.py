"""Workflow files: the shipped ones load, a broken one is refused with the file and the title named."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from providers.comfyui_workflow import (
    FRAMES,
    SHIPPED_DIR,
    WIDTH,
    WorkflowError,
    WorkflowKind,
    load_workflow,
    resolve,
)

SHIPPED = {
    "wan2.2_ti2v_5b_t2v.json": WorkflowKind.TEXT_TO_VIDEO,
    "wan2.2_ti2v_5b_i2v.json": WorkflowKind.IMAGE_TO_VIDEO,
    "flux1_schnell_t2i.json": WorkflowKind.TEXT_TO_IMAGE,
}


def write(tmp_path: Path, graph: object, name: str = "mine.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(graph), encoding="utf-8")
    return path


def shipped(name: str = "wan2.2_ti2v_5b_t2v.json") -> dict:
    return json.loads((SHIPPED_DIR / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name,kind", SHIPPED.items())
def test_the_shipped_workflows_load_with_every_title_their_kind_needs(name: str, kind: WorkflowKind) -> None:
    workflow = load_workflow(SHIPPED_DIR / name, kind)
    assert workflow.graph[workflow.output_node]["class_type"] in ("SaveVideo", "SaveImage")
    if kind is not WorkflowKind.TEXT_TO_IMAGE:
        assert workflow.fps == 24 and workflow.slots[FRAMES]


def test_fill_sets_titled_inputs_on_a_copy() -> None:
    workflow = load_workflow(SHIPPED_DIR / "wan2.2_ti2v_5b_t2v.json", WorkflowKind.TEXT_TO_VIDEO)
    graph = workflow.fill({WIDTH: 640, FRAMES: 48})
    assert graph["60"]["inputs"]["value"] == 640 and graph["62"]["inputs"]["value"] == 48
    assert workflow.graph["60"]["inputs"]["value"] == 1280, "the loaded workflow stays as it was"


def test_a_missing_title_names_the_file_and_the_title(tmp_path: Path) -> None:
    graph = shipped()
    graph["62"]["_meta"]["title"] = "Length"
    path = write(tmp_path, graph)
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path, WorkflowKind.TEXT_TO_VIDEO)
    message = caught.value.message
    assert str(path) in message and "'videobot.frames'" in message and "\n" not in message


def test_an_image_to_video_workflow_needs_the_image_title(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="no node is titled 'videobot.image'"):
        load_workflow(SHIPPED_DIR / "wan2.2_ti2v_5b_t2v.json", WorkflowKind.IMAGE_TO_VIDEO)


@pytest.mark.parametrize(
    "edit,expected",
    [
        (lambda g: g["60"]["_meta"].update(title="videobot.widht"), "unknown title 'videobot.widht'"),
        (lambda g: g["8"]["_meta"].update(title="videobot.output"), "2 nodes are titled 'videobot.output'"),
        (lambda g: g["57"]["inputs"].update(fps="fast"), "not a frame rate"),
        # A title on a node whose value is wired from elsewhere cannot be set there.
        (lambda g: g["55"]["_meta"].update(title="videobot.width") or g["60"]["_meta"].update(title="w"), "has no input to set"),
        (lambda g: g["3"].pop("class_type"), "node 3 has no class_type"),
    ],
)
def test_broken_workflows_are_refused_with_a_reason(tmp_path: Path, edit, expected: str) -> None:  # type: ignore[no-untyped-def]
    graph = shipped()
    edit(graph)
    with pytest.raises(WorkflowError, match=expected):
        load_workflow(write(tmp_path, graph), WorkflowKind.TEXT_TO_VIDEO)


def test_a_ui_workflow_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    ui = write(tmp_path, {"last_node_id": 9, "nodes": [], "links": [], "version": 0.4})
    with pytest.raises(WorkflowError, match=r"UI workflow; save it from ComfyUI with Workflow > Export \(API\)"):
        load_workflow(ui, WorkflowKind.TEXT_TO_VIDEO)
    with pytest.raises(WorkflowError, match="file not found"):
        load_workflow(tmp_path / "nope.json", WorkflowKind.TEXT_TO_VIDEO)
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(WorkflowError, match="is not JSON"):
        load_workflow(tmp_path / "bad.json", WorkflowKind.TEXT_TO_VIDEO)


def test_names_resolve_absolute_then_in_the_directory_then_shipped(tmp_path: Path) -> None:
    assert resolve(str(tmp_path / "a.json"), None) == tmp_path / "a.json"
    assert resolve("a.json", tmp_path) == tmp_path / "a.json"
    assert resolve("a.json", None) == SHIPPED_DIR / "a.json"
