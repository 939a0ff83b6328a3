"""End to end through the real core (service, runner, store) on the `sora` pipelines, with the
settings pointing the openai SDK at the loopback emulator."""
from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.app import App, open_app
from bot.config import Settings, load_settings
from bot.core.errors import user_message
from bot.core.models import GenerateRequest, Job, JobStatus, Origin
from providers.errors import NotConfigured
from providers.openai_common import SORA_DEPRECATION
from providers.polling import PollPolicy
from tests.fakes.openai_server import OpenAIEmulator
from tests.helpers import assert_video

pytestmark = pytest.mark.filterwarnings(f"ignore:{SORA_DEPRECATION}:DeprecationWarning")

ORIGIN = Origin(platform="cli", user_id="tester")


@pytest.fixture
def openai_settings(settings: Settings, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    return load_settings()


async def _no_delivery(job: Job) -> None:
    return None


async def start_app(settings: Settings) -> App:
    app = await open_app(settings)
    timeout = settings.core.job_timeout_minutes * 60
    app.runner.poll_policy = PollPolicy(interval=0.01, min_interval=0.01, timeout=timeout, backoff_base=0.01, backoff_max=0.2)
    app.runner.deliverers["cli"] = _no_delivery
    await app.runner.start()
    return app


@pytest.fixture
async def sora_app(openai_settings: Settings) -> AsyncIterator[App]:
    app = await start_app(openai_settings)
    try:
        yield app
    finally:
        await app.close()


async def run(app: App, request: GenerateRequest) -> Job:
    job = await app.service.submit(request, ORIGIN)
    return await asyncio.wait_for(app.runner.wait(job.id), 20)


async def test_sora_text_to_video_end_to_end(sora_app: App, openai_server: OpenAIEmulator) -> None:
    job = await run(sora_app, GenerateRequest(prompt="a lighthouse at dusk", pipeline="sora", seconds=4, size="1280x720"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert_video(job.output_path, width=128, height=72, seconds=4)  # type: ignore[arg-type]
    assert job.thumbnail_path and Image.open(job.thumbnail_path).format == "JPEG"
    assert job.remote_id in openai_server.videos and job.provider == "sora" and job.model == "sora-2"
    assert job.cost_estimate == pytest.approx(0.4) and job.cost_actual == pytest.approx(0.4)
    assert len(openai_server.creates) == 1
    assert [r.query.get("variant") for r in openai_server.calls("content")] == ["video", "thumbnail"]


async def test_image_to_video_and_then_remix_and_extend(sora_app: App, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    picture = tmp_path / "wide.png"
    Image.new("RGB", (900, 300), (10, 120, 200)).save(picture)
    job = await run(sora_app, GenerateRequest(prompt="the sea moves", pipeline="sora", seconds=4, size="720x1280", image_path=picture))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert Image.open(io.BytesIO(openai_server.creates[0].files["input_reference"]["data"])).size == (720, 1280)

    remix = await sora_app.service.remix(job.id, "the sea at night", ORIGIN)
    remix = await asyncio.wait_for(sora_app.runner.wait(remix.id), 20)
    assert remix.status is JobStatus.COMPLETED, remix.error_message
    assert openai_server.creates[1].path == f"/v1/videos/{job.remote_id}/remix"

    ext = await sora_app.service.extend(job.id, ORIGIN, seconds=4, prompt="the tide comes in")
    ext = await asyncio.wait_for(sora_app.runner.wait(ext.id), 20)
    assert ext.status is JobStatus.COMPLETED, ext.error_message
    assert openai_server.creates[2].fields["video"] == {"id": job.remote_id}
    assert_video(ext.output_path, width=72, height=128, seconds=8)  # type: ignore[arg-type]


async def test_gpt_image_then_sora(sora_app: App, openai_server: OpenAIEmulator) -> None:
    job = await run(sora_app, GenerateRequest(prompt="a paper boat", pipeline="gpt-image+sora", seconds=4, size="1280x720"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (image_call,) = openai_server.calls("image")
    assert image_call.fields["size"] == "1280x720" and image_call.fields["model"] == "gpt-image-2"
    (create,) = openai_server.creates
    assert Image.open(io.BytesIO(create.files["input_reference"]["data"])).size == (1280, 720)
    assert Path(job.state["image_step_path"]).exists() and job.state["image_step_cost"] > 0


async def test_500_after_accepted_create_fails_once_without_a_second_create(sora_app: App, openai_server: OpenAIEmulator) -> None:
    openai_server.accept_then_fail("create", 500)
    job = await run(sora_app, GenerateRequest(prompt="a fox", pipeline="sora"))
    assert job.status is JobStatus.FAILED
    assert job.error_message == "The video service is unavailable at sora. Try again later."
    await asyncio.sleep(0.1)
    assert len(openai_server.creates) == 1


@pytest.mark.parametrize(
    ("prompt", "fail_jobs", "expected"),
    [
        ("something forbidden", None, "Rejected by the provider's content policy (Your request was blocked by our moderation system.). Rephrase the prompt and try again."),
        ("a fox", ("video_generation_failed", "Try a simpler scene."), "The provider could not make this video [video_generation_failed]: Try a simpler scene."),
    ],
)
async def test_provider_refusals_reach_the_user(sora_app: App, openai_server: OpenAIEmulator, prompt: str, fail_jobs: tuple[str, str] | None, expected: str) -> None:
    openai_server.fail_jobs = fail_jobs
    job = await run(sora_app, GenerateRequest(prompt=prompt, pipeline="sora"))
    assert job.status is JobStatus.FAILED and job.error_message == expected


async def test_restart_mid_job_polls_the_same_remote_job(openai_settings: Settings, openai_server: OpenAIEmulator) -> None:
    openai_server.hold = True
    app = await start_app(openai_settings)
    try:
        job = await app.service.submit(GenerateRequest(prompt="a slow glacier", pipeline="sora"), ORIGIN)
        deadline = time.monotonic() + 10
        while (current := await app.store.get(job.id)) is not None and (current.remote_id is None or current.progress == 0):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await app.runner.stop()
    finally:
        await app.close()
    assert current is not None and current.status is JobStatus.RUNNING

    openai_server.hold = False
    again = await start_app(openai_settings)
    try:
        done = await asyncio.wait_for(again.runner.wait(job.id), 20)
    finally:
        await again.close()
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.remote_id == current.remote_id
    assert len(openai_server.creates) == 1
    assert_video(done.output_path, width=128, height=72, seconds=4)  # type: ignore[arg-type]


async def test_overall_timeout_deletes_the_remote_video(settings: Settings, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("VIDEOBOT_JOB_TIMEOUT_MINUTES", "0.005")  # 0.3 s
    openai_server.hold = True
    app = await start_app(load_settings())
    try:
        job = await run(app, GenerateRequest(prompt="a very long take", pipeline="sora"))
    finally:
        await app.close()
    assert job.status is JobStatus.FAILED and job.error_code == "timeout"
    assert "did not finish within" in (job.error_message or "")
    assert [r.path for r in openai_server.calls("delete")] == [f"/v1/videos/{job.remote_id}"]


async def test_without_keys_the_pipelines_are_listed_but_refuse(app: App) -> None:
    for name in ("sora", "gpt-image+sora", "gpt-image"):
        assert name in app.registry.names()
        pipeline = app.registry.get(name)
        assert not pipeline.configured and "OPENAI_API_KEY" in pipeline.not_configured_reason
    with pytest.raises(NotConfigured) as err:
        await app.service.submit(GenerateRequest(prompt="a fox", pipeline="sora"), ORIGIN)
    assert user_message(err.value).startswith("This pipeline is not configured")
    assert await app.store.list(limit=5) == []
