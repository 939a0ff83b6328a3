"""The ComfyUI pipelines end to end through the real core, against the ComfyUI emulator.

Apps are built from COMFYUI_* settings pointing at the emulator; assertions read what the
emulator recorded and what the job row and the MP4 say.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from PIL import Image

from bot.app import App, open_app
from bot.config import Settings, load_settings
from bot.core.errors import ConfigError
from bot.core.models import Actor, GenerateRequest, Job, JobKind, JobStatus, Origin
from providers.comfyui import ComfyUIVideoProvider, prompt_ids
from providers.polling import PollPolicy
from tests.fakes.comfyui_server import ComfyUIServer, comfyui_server, load_shipped  # noqa: F401 (fixture)
from tests.fakes.openai_server import OpenAIEmulator
from tests.helpers import assert_video

pytestmark = pytest.mark.timeout(90)
ORIGIN = Origin(platform="cli", user_id="tester")
AppFactory = Callable[..., Awaitable[App]]


async def _no_delivery(job: Job) -> None:
    return None


@pytest.fixture
def comfy_env(settings: Settings, comfyui_server: ComfyUIServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in list(os.environ):
        if key.startswith("COMFYUI_"):
            monkeypatch.delenv(key)
    env = {"COMFYUI_URL": comfyui_server.base_url, "COMFYUI_POLL_SECONDS": "0.02", "COMFYUI_ABSENCE_GRACE_SECONDS": "0.3"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
async def make_app(comfy_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AppFactory]:
    apps: list[App] = []

    async def factory(**env: str) -> App:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        app = await open_app(load_settings())
        app.runner.poll_policy = PollPolicy(interval=0.02, min_interval=0.01, backoff_base=0.01, backoff_max=0.05)
        app.runner.deliverers["cli"] = _no_delivery
        await app.runner.start()
        apps.append(app)
        return app

    try:
        yield factory
    finally:
        for app in apps:
            await app.close()


async def run(app: App, request: GenerateRequest) -> Job:
    job = await app.service.submit(request, ORIGIN)
    return await asyncio.wait_for(app.runner.wait(job.id), 30)


async def until(app: App, job_id: str, check: Callable[[Job], bool], timeout: float = 10) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = await app.store.get(job_id)
        if job is not None and check(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} never reached the expected state ({job.status if job else None})"
        await asyncio.sleep(0.01)


async def wait_for(condition: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def provider(app: App) -> ComfyUIVideoProvider:
    video = app.registry.get("comfyui").video
    assert isinstance(video, ComfyUIVideoProvider)
    return video


# --- text and image to video ------------------------------------------------------------------------


async def test_text_to_video_on_comfyui(make_app: AppFactory, comfyui_server: ComfyUIServer) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a red kite over the sea", pipeline="comfyui", seconds=3, size="1280x704"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (post,) = comfyui_server.prompt_posts()
    assert post.json["prompt_id"] == job.remote_id == prompt_ids("video", job.id)[0]
    assert post.json["prompt"]["62"]["inputs"]["value"] == 72  # 3 s x 24 fps
    assert job.provider == "comfyui" and job.model == "wan2.2_ti2v_5b_t2v"
    assert job.cost_estimate == 0.0 and job.cost_actual == 0.0  # own hardware
    gpu = provider(app).gpu_seconds(job.remote_id)  # type: ignore[arg-type]
    assert gpu is not None and gpu > 0
    assert_video(job.output_path, width=128, height=70, seconds=3)  # type: ignore[arg-type]


async def test_image_to_video_on_comfyui_with_a_price(make_app: AppFactory, comfyui_server: ComfyUIServer, tmp_path: Path) -> None:
    app = await make_app(COMFYUI_USD_PER_SECOND="0.02")
    picture = tmp_path / "pic.png"
    Image.new("RGB", (900, 900), (200, 40, 30)).save(picture)
    job = await run(app, GenerateRequest(prompt="the picture comes alive", pipeline="comfyui", seconds=2, size="704x1280",
                                         image_path=picture))  # fmt: skip
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert job.model == "wan2.2_ti2v_5b_i2v" and job.cost_estimate == pytest.approx(0.04)
    (upload,) = comfyui_server.calls("POST", "/upload/image")
    assert comfyui_server.prompt_posts()[0].json["prompt"]["56"]["inputs"]["image"] == upload.json["name"]
    assert_video(job.output_path, width=70, height=128, seconds=2)  # type: ignore[arg-type]


async def test_a_comfyui_still_animated_by_comfyui(make_app: AppFactory, comfyui_server: ComfyUIServer) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a lighthouse at dusk", pipeline="comfyui-image+comfyui", seconds=2, size="1280x704"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    image_post, video_post = comfyui_server.prompt_posts()
    assert image_post.json["prompt_id"] == prompt_ids("image", job.id)[0]
    assert "cinematic composition" in image_post.json["prompt"]["6"]["inputs"]["text"]  # written for video
    assert video_post.json["prompt"]["6"]["inputs"]["text"] == "a lighthouse at dusk"
    assert comfyui_server.calls("POST", "/upload/image")
    assert_video(job.output_path, width=128, height=70, seconds=2)  # type: ignore[arg-type]


async def test_any_image_source_chains_into_comfyui(
    make_app: AppFactory, comfyui_server: ComfyUIServer, openai_server: OpenAIEmulator
) -> None:
    app = await make_app(OPENAI_API_KEY=openai_server.api_key, OPENAI_BASE_URL=openai_server.base_url)
    job = await run(app, GenerateRequest(prompt="a fox in snow", pipeline="gpt-image+comfyui", seconds=2, size="1280x704"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(openai_server.calls("image")) == 1
    (upload,) = comfyui_server.calls("POST", "/upload/image")
    (post,) = comfyui_server.prompt_posts()
    assert post.json["prompt"]["56"]["inputs"]["image"] == upload.json["name"]
    assert_video(job.output_path, width=128, height=70, seconds=2)  # type: ignore[arg-type]


async def test_an_image_job_on_comfyui(make_app: AppFactory, comfyui_server: ComfyUIServer) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a teal coupe", kind=JobKind.IMAGE, pipeline="comfyui-image", size="1024x768"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert Image.open(job.output_path).size == (1024, 768)  # type: ignore[arg-type]


# --- crash-proof: adopted by our own prompt id, never queued twice ------------------------------------


async def _interrupted_create(app: App, server: ComfyUIServer, *, sent_ago: float = 1.0) -> Job:
    """A job as a SIGKILL between POST /prompt and the id write leaves it."""
    server.hold_at_step = 2
    job = await app.service.submit(GenerateRequest(prompt="cut off mid-create", pipeline="comfyui", seconds=2, size="1280x704"), ORIGIN)
    running = await until(app, job.id, lambda j: j.remote_id is not None)
    await app.runner.stop()
    state = {**running.state, "submit_sent_to": "comfyui", "submit_sent_at": time.time() - sent_ago}
    await app.store.update(job.id, status=JobStatus.SUBMITTING, remote_id=None, state=state)
    await app.close()
    return running


async def test_restart_mid_job_adopts_the_prompt_by_id_with_one_post(make_app: AppFactory, comfyui_server: ComfyUIServer) -> None:
    first = await make_app()
    before = await _interrupted_create(first, comfyui_server)
    comfyui_server.release()
    again = await make_app()
    done = await asyncio.wait_for(again.runner.wait(before.id), 30)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.remote_id == before.remote_id and len(comfyui_server.prompt_posts()) == 1
    assert_video(done.output_path, width=128, height=70, seconds=2)  # type: ignore[arg-type]


async def test_a_create_that_never_arrived_is_queued_once_more(make_app: AppFactory, comfyui_server: ComfyUIServer) -> None:
    first = await make_app()
    comfyui_server.paused = True
    before = await _interrupted_create(first, comfyui_server, sent_ago=0)
    comfyui_server.pending.clear()  # as if the POST never reached the server
    comfyui_server.hold_at_step = None
    comfyui_server.paused = False
    started = time.monotonic()
    again = await make_app()
    done = await asyncio.wait_for(again.runner.wait(before.id), 30)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert time.monotonic() - started >= 0.25, "the miss counted only after the grace for requests in flight"
    first_post, second_post = comfyui_server.prompt_posts()
    assert first_post.json["prompt_id"] == second_post.json["prompt_id"] == done.remote_id


# --- progress survives a dropped websocket ------------------------------------------------------------


async def test_websocket_dropped_mid_job_polling_finishes_it(make_app: AppFactory, comfyui_server: ComfyUIServer) -> None:
    app = await make_app()
    comfyui_server.hold_at_step = 3
    job = await app.service.submit(GenerateRequest(prompt="through the storm", pipeline="comfyui", seconds=2, size="1280x704"), ORIGIN)
    running = await until(app, job.id, lambda j: j.status is JobStatus.RUNNING)
    client = provider(app).client
    await wait_for(lambda: client.connected and comfyui_server.step == 2)
    comfyui_server.refuse_websockets = True
    await comfyui_server.drop_websockets()
    await wait_for(lambda: not client.connected)
    history_reads = len(comfyui_server.calls("GET", f"/history/{running.remote_id}"))
    comfyui_server.release()
    done = await asyncio.wait_for(app.runner.wait(job.id), 30)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert not client.connected, "finished from /history, not from a reconnected socket"
    assert len(comfyui_server.calls("GET", f"/history/{running.remote_id}")) > history_reads
    assert_video(done.output_path, width=128, height=70, seconds=2)  # type: ignore[arg-type]


# --- cancel -------------------------------------------------------------------------------------------


async def test_cancel_stops_the_prompt_on_the_server(make_app: AppFactory, comfyui_server: ComfyUIServer) -> None:
    app = await make_app()
    comfyui_server.hold_at_step = 2
    job = await app.service.submit(GenerateRequest(prompt="stop me", pipeline="comfyui", seconds=2, size="1280x704"), ORIGIN)
    running = await until(app, job.id, lambda j: j.remote_id is not None and j.status is JobStatus.RUNNING)
    await wait_for(lambda: comfyui_server.step == 1)
    await app.service.cancel(job.id, Actor(user_id=ORIGIN.user_id))
    done = await asyncio.wait_for(app.runner.wait(job.id), 10)
    assert done.status is JobStatus.CANCELLED
    assert comfyui_server.calls("POST", f"/api/jobs/{running.remote_id}/cancel")
    await wait_for(lambda: running.remote_id in comfyui_server.history)
    messages = [m[0] for m in comfyui_server.history[running.remote_id]["status"]["messages"]]  # type: ignore[index]
    assert "execution_interrupted" in messages
    assert any("cancelled at comfyui" in (e["detail"] or "") for e in await app.store.events(job.id))


# --- a workflow without the titles stops start-up ------------------------------------------------------


def _untitled(tmp_path: Path) -> Path:
    graph = load_shipped("wan2.2_ti2v_5b_t2v.json")
    for node in graph.values():
        node["_meta"]["title"] = node["class_type"]  # as exported, before anyone titled the inputs
    path = tmp_path / "workflows" / "my_wan.json"
    path.parent.mkdir()
    path.write_text(json.dumps(graph), encoding="utf-8")
    return path


async def test_a_workflow_without_the_titles_is_a_clear_startup_error(
    comfy_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _untitled(tmp_path)
    monkeypatch.setenv("COMFYUI_WORKFLOWS_DIR", str(path.parent))
    monkeypatch.setenv("COMFYUI_T2V_WORKFLOW", path.name)
    with pytest.raises(ConfigError) as caught:
        await open_app(load_settings())
    assert caught.value.message == (
        f"ComfyUI workflow {path}: no node is titled 'videobot.prompt', which a text-to-video workflow needs "
        "(see docs/comfyui.md)."
    )


def test_the_cli_refuses_to_start_with_that_line(
    comfy_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    path = _untitled(tmp_path)
    monkeypatch.setenv("COMFYUI_T2V_WORKFLOW", str(path))
    assert main(["pipelines"]) == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"videobot: ComfyUI workflow {path}: no node is titled 'videobot.prompt', which a text-to-video "
                   "workflow needs (see docs/comfyui.md)."]  # fmt: skip


def test_without_a_url_the_pipelines_are_listed_but_not_configured(
    comfy_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    monkeypatch.setenv("COMFYUI_URL", "")
    assert main(["pipelines"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines if line and not line[0].isspace()}
    for name in ("comfyui", "comfyui-image", "comfyui-image+comfyui"):
        assert "(not configured)" in listed[name]
