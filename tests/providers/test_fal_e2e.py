"""The fal pipelines through the real core (service, runner, store): text to video, image to
video (a user's image, and the `gpt-image+fal` / `flux+fal` chains), cancel, a 429 waited
out, refusals, a restart mid-job. The app is built from settings pointing at loopback
emulators; assertions read what the emulators recorded and what the user would see."""
from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.app import App
from bot.config import Settings
from bot.core.models import Actor, GenerateRequest, Job, JobStatus, Origin, ProgressEvent
from providers.errors import InvalidRequest
from providers.fal import TABLE_PATH
from tests.fakes.bfl_server import KEY as BFL_KEY
from tests.fakes.bfl_server import BflServer
from tests.fakes.fal_server import KEY, FalServer, fal_server  # noqa: F401
from tests.apps import AppFactory, AppMaker, run_job, until
from tests.fakes.openai_server import OpenAIEmulator
from tests.helpers import assert_video

ORIGIN = Origin(platform="cli", user_id="tester")
KLING_T2V = "fal-ai/kling-video/v2.5-turbo/pro/text-to-video"
KLING_I2V = "fal-ai/kling-video/v2.5-turbo/pro/image-to-video"


@pytest.fixture
async def make_app(
    settings: Settings, fal_server: FalServer, bfl_server: BflServer, openai_server: OpenAIEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[AppFactory]:
    """An app on the fal, BFL and OpenAI emulators; keyword arguments are extra env vars (None removes one).
    A developer's own fal settings stay out (the settings fixture clears them)."""
    async with AppMaker(monkeypatch, {
        "FAL_KEY": KEY, "FAL_QUEUE_URL": fal_server.base_url, "FAL_POLL_SECONDS": "0.01", "FAL_RETRY_BACKOFF_SECONDS": "0.01",
        "BFL_API_KEY": BFL_KEY, "BFL_BASE_URL": bfl_server.base_url, "BFL_POLL_SECONDS": "0.01", "BFL_RETRY_BACKOFF_SECONDS": "0.01",
        **openai_server.env,
    }) as apps:  # fmt: skip
        yield apps.make


async def run(app: App, request: GenerateRequest) -> Job:
    return await run_job(app, request, ORIGIN, timeout=20)


def sent_image(fal_server: FalServer) -> Image.Image:
    header, _, payload = fal_server.submits()[-1].json["image_url"].partition(",")
    assert header == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(payload)))


# --- text and image to video ------------------------------------------------------------------


async def test_text_to_video_with_queue_position_and_progress(make_app: AppFactory, fal_server: FalServer) -> None:
    app = await make_app(start=False)
    messages: list[str] = []
    progress: list[int] = []

    async def record(event: ProgressEvent) -> None:
        messages.append(event.message or "")
        progress.append(event.progress)

    app.bus.subscribe(record)
    await app.runner.start()
    job = await run(app, GenerateRequest(prompt="a lighthouse in a storm", pipeline="fal"))
    await app.bus.drain()
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert (job.provider, job.model, job.params.seconds) == ("fal", KLING_T2V, 5)
    assert job.remote_id and job.remote_id.startswith(f"{KLING_T2V}#")
    assert job.cost_estimate == pytest.approx(0.35) and job.cost_actual == pytest.approx(0.35)
    (sent,) = fal_server.submits()
    assert sent.json["prompt"] == "a lighthouse in a storm" and sent.json["duration"] == "5"
    assert "queued at fal, next in line" in messages
    assert any(0 < p < 100 for p in progress)  # the model's logged percentages
    assert_video(job.output_path, width=128, height=72, seconds=5)  # type: ignore[arg-type]


async def test_a_users_image_goes_to_the_image_to_video_endpoint(make_app: AppFactory, fal_server: FalServer, tmp_path: Path) -> None:
    app = await make_app()
    picture = tmp_path / "pic.png"
    Image.new("RGB", (900, 1400), (200, 40, 40)).save(picture)
    job = await run(app, GenerateRequest(prompt="the poster flutters", pipeline="fal", image_path=picture, size="720x1280"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert fal_server.submits()[-1].path == f"/{KLING_I2V}" and job.model == KLING_I2V
    assert sent_image(fal_server).size == (720, 1280)
    assert_video(job.output_path, width=72, height=128, seconds=5)  # type: ignore[arg-type]


async def test_gpt_image_then_fal(make_app: AppFactory, fal_server: FalServer, openai_server: OpenAIEmulator) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a red fox in fresh snow", pipeline="gpt-image+fal", seconds=10))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (image_call,) = openai_server.calls("image")
    assert image_call.fields["size"] == "1280x720" and image_call.fields["prompt"].startswith("a red fox in fresh snow, cinematic")
    (sent,) = fal_server.submits()
    assert sent.path == f"/{KLING_I2V}" and sent.json["prompt"] == "a red fox in fresh snow" and sent.json["duration"] == "10"
    assert sent_image(fal_server).size == (1280, 720)
    image_cost = job.state["image_step_cost"] or 0.0
    assert job.cost_actual == pytest.approx(0.70 + image_cost, abs=1e-4)
    assert_video(job.output_path, width=128, height=72, seconds=10)  # type: ignore[arg-type]


async def test_flux_then_fal_portrait(make_app: AppFactory, fal_server: FalServer, bfl_server: BflServer) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a lighthouse at dusk", pipeline="flux+fal", size="720x1280"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (submit,) = bfl_server.submits()
    assert (submit.json["width"], submit.json["height"]) == (720, 1280)
    assert sent_image(fal_server).size == (720, 1280)
    assert job.cost_estimate == pytest.approx(0.03 + 0.35)
    assert_video(job.output_path, width=72, height=128, seconds=5)  # type: ignore[arg-type]


# --- cancel, rate limits, refusals ------------------------------------------------------------


async def test_cancel_reaches_fal(make_app: AppFactory, fal_server: FalServer) -> None:
    fal_server.hold = True
    app = await make_app()
    job = await app.service.submit(GenerateRequest(prompt="a very long take", pipeline="fal"), ORIGIN)
    await until(lambda: _running(app, job.id), "the job runs at fal")
    await app.service.cancel(job.id, Actor.of(ORIGIN))
    done = await asyncio.wait_for(app.runner.wait(job.id), 10)
    assert done.status is JobStatus.CANCELLED
    (put,) = fal_server.calls("PUT")
    assert put.path.endswith(f"/requests/{done.remote_id.rpartition('#')[2]}/cancel")  # type: ignore[union-attr]
    assert all(r.cancelled for r in fal_server.queue.values())


async def _running(app: App, job_id: str) -> bool:
    job = await app.store.get(job_id)
    return job is not None and job.remote_id is not None and job.progress > 0


async def test_a_429_on_create_is_waited_out(make_app: AppFactory, fal_server: FalServer) -> None:
    fal_server.fail("POST", "/fal-ai/", 429, times=4, headers={"Retry-After": "0.05"})
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a popular model", pipeline="fal"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(fal_server.submits()) == 5 and len(fal_server.queue) == 1  # refused four times, queued once
    events = [e["detail"] or "" for e in await app.store.events(job.id)]
    assert any("rate limited by fal" in d for d in events)
    assert_video(job.output_path, width=128, height=72, seconds=5)  # type: ignore[arg-type]


async def test_an_unknown_endpoint_is_refused_with_nothing_sent(make_app: AppFactory, fal_server: FalServer) -> None:
    app = await make_app()
    with pytest.raises(InvalidRequest) as info:
        await app.service.submit(GenerateRequest(prompt="x", pipeline="fal", model="fal-ai/brand-new/text-to-video"), ORIGIN)
    assert "fal endpoint table" in str(info.value) and str(TABLE_PATH) in str(info.value)
    other = await make_app(FAL_VIDEO_MODEL="fal-ai/brand-new/text-to-video")
    with pytest.raises(InvalidRequest, match="not in the fal endpoint table"):
        await other.service.submit(GenerateRequest(prompt="x", pipeline="fal"), ORIGIN)
    assert await app.store.list() == [] and fal_server.requests == []


async def test_content_policy_fails_without_fallback(make_app: AppFactory, fal_server: FalServer) -> None:
    app = await make_app(VIDEOBOT_FALLBACKS="fal:local")
    job = await run(app, GenerateRequest(prompt="something forbidden", pipeline="fal"))
    assert job.status is JobStatus.FAILED and job.error_code == "content_policy" and job.pipeline == "fal"
    assert "content policy" in (job.error_message or "") and "fallbacks" not in job.state
    assert len(fal_server.submits()) == 1


async def test_without_a_key_fal_falls_back_before_anything_is_paid(make_app: AppFactory, fal_server: FalServer,
                                                                    openai_server: OpenAIEmulator) -> None:  # fmt: skip
    app = await make_app(FAL_KEY=None, VIDEOBOT_FALLBACKS="gpt-image+fal:local")
    assert app.registry.chains()["gpt-image+fal"] == "FAL_KEY is not set"  # type: ignore[attr-defined]
    job = await run(app, GenerateRequest(prompt="a fox", pipeline="gpt-image+fal", seconds=2, size="256x144"))
    assert job.status is JobStatus.COMPLETED and job.pipeline == "local"
    assert openai_server.calls("image") == [] and fal_server.requests == []


async def test_an_ambiguous_create_is_not_sent_again(make_app: AppFactory, fal_server: FalServer) -> None:
    fal_server.fail("POST", "/fal-ai/", 502)
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a fox", pipeline="fal"))
    assert job.status is JobStatus.FAILED and "not billed twice" in (job.error_message or "")
    await asyncio.sleep(0.05)
    assert len(fal_server.submits()) == 1


# --- restart ----------------------------------------------------------------------------------


async def test_restart_mid_job_polls_the_same_request(make_app: AppFactory, fal_server: FalServer) -> None:
    fal_server.hold = True
    app = await make_app()
    job = await app.service.submit(GenerateRequest(prompt="a slow glacier", pipeline="fal"), ORIGIN)
    current = await until(lambda: _running(app, job.id), "the job runs at fal")
    current = await app.store.get(job.id)
    await app.runner.stop()
    await app.close()
    assert current is not None and current.status is JobStatus.RUNNING

    fal_server.hold = False
    again = await make_app()
    done = await asyncio.wait_for(again.runner.wait(job.id), 20)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.remote_id == current.remote_id and len(fal_server.submits()) == 1
    assert_video(done.output_path, width=128, height=72, seconds=5)  # type: ignore[arg-type]
