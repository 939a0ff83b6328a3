"""The Kling pipelines through the real core (service, runner, store) against the loopback Kling
emulator, which checks each request's JWT with PyJWT: text and image to video, a chain, extend
(Kling's own extension, and from the last frame), cancel, a 429 waited out, refusals, and the
exactly-once create: a crash between sending a create and storing its task id is settled by
reading the task back by its external_task_id (our job id), with one create at the emulator."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.app import App
from bot.config import Settings, load_settings
from bot.core.models import Actor, GenerateRequest, Job, JobStatus, Origin
from providers.errors import InvalidRequest
from providers.media import last_frame
from tests.apps import AppFactory, AppMaker, run_job, until_job
from tests.fakes.kling_server import ACCESS_KEY, SECRET_KEY, KlingServer, sent_image
from tests.fakes.openai_server import OpenAIEmulator
from tests.helpers import assert_video

ORIGIN = Origin(platform="cli", user_id="tester")


@pytest.fixture
async def make_app(
    settings: Settings, kling_server: KlingServer, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AppFactory]:
    """An app on the Kling (and OpenAI) emulators; keyword arguments are extra env vars (None removes one)."""
    async with AppMaker(monkeypatch, {
        "KLING_ACCESS_KEY": ACCESS_KEY, "KLING_SECRET_KEY": SECRET_KEY, "KLING_BASE_URL": kling_server.base_url,
        "KLING_POLL_SECONDS": "0.01", "KLING_RETRY_BACKOFF_SECONDS": "0.01",
        **openai_server.env,
    }) as apps:  # fmt: skip
        yield apps.make


async def run(app: App, request: GenerateRequest) -> Job:
    return await run_job(app, request, ORIGIN)


# --- text and image to video ------------------------------------------------------------------


async def test_text_to_video_signed_with_a_fresh_jwt(make_app: AppFactory, kling_server: KlingServer) -> None:
    app = await make_app()
    before = time.time()
    job = await run(app, GenerateRequest(prompt="a lighthouse in a storm", pipeline="kling"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (create,) = kling_server.creates()
    assert create.path == "/v1/videos/text2video"
    assert create.json == {
        "prompt": "a lighthouse in a storm", "external_task_id": job.id, "model_name": "kling-v2-5-turbo",
        "mode": "std", "duration": "5", "aspect_ratio": "16:9",
    }  # fmt: skip
    claims = create.claims
    assert claims is not None and claims["iss"] == ACCESS_KEY
    assert before - 7 <= claims["nbf"] <= time.time() - 4  # now - 5 s
    assert claims["exp"] - claims["nbf"] == 1805  # now + 30 min
    assert (job.provider, job.model) == ("kling", "kling-v2-5-turbo")
    assert job.remote_id == f"text2video:{kling_server.by_external_id(job.id).id}"  # type: ignore[union-attr]
    assert job.cost_estimate == pytest.approx(0.21)
    assert_video(job.output_path, width=128, height=72, seconds=5)  # type: ignore[arg-type]


async def test_a_users_image_goes_as_bare_base64_cropped_to_the_size(make_app: AppFactory, kling_server: KlingServer, tmp_path: Path) -> None:
    app = await make_app()
    picture = tmp_path / "pic.png"
    Image.new("RGB", (900, 1400), (200, 40, 40)).save(picture)
    job = await run(app, GenerateRequest(prompt="the poster flutters", pipeline="kling", image_path=picture, size="720x1280", seconds=10))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (create,) = kling_server.creates()
    assert create.path == "/v1/videos/image2video" and create.json["duration"] == "10" and "aspect_ratio" not in create.json
    image = sent_image(create)
    assert image.size == (720, 1280)
    r, g, b = image.getpixel((360, 640))
    assert abs(r - 200) < 12 and g < 60 and b < 60
    assert_video(job.output_path, width=72, height=128, seconds=10)  # type: ignore[arg-type]


async def test_gpt_image_then_kling(make_app: AppFactory, kling_server: KlingServer, openai_server: OpenAIEmulator) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a red fox in fresh snow", pipeline="gpt-image+kling"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(openai_server.calls("image")) == 1
    (create,) = kling_server.creates()
    assert create.path == "/v1/videos/image2video" and create.json["prompt"] == "a red fox in fresh snow"
    assert sent_image(create).size == (1280, 720)
    assert_video(job.output_path, width=128, height=72, seconds=5)  # type: ignore[arg-type]


async def test_a_size_kling_does_not_make_is_refused_with_nothing_sent(make_app: AppFactory, kling_server: KlingServer) -> None:
    app = await make_app()
    with pytest.raises(InvalidRequest, match="1280x720, 720x1280 or|1280x720, 720x1280, 720x720"):
        await app.service.submit(GenerateRequest(prompt="x", pipeline="kling", size="1024x1024"), ORIGIN)
    with pytest.raises(InvalidRequest, match="5 or 10 seconds"):
        await app.service.submit(GenerateRequest(prompt="x", pipeline="kling", seconds=7), ORIGIN)
    assert await app.store.list() == [] and kling_server.requests == []


# --- extend -----------------------------------------------------------------------------------


async def test_extend_uses_klings_own_extension_for_a_kling_video(make_app: AppFactory, kling_server: KlingServer) -> None:
    app = await make_app(KLING_MODEL="kling-v1-6")
    first = await run(app, GenerateRequest(prompt="a paper boat on a river", pipeline="kling"))
    assert first.status is JobStatus.COMPLETED, first.error_message
    job = await app.service.extend(first.id, ORIGIN, prompt="the boat drifts under a bridge")
    done = await asyncio.wait_for(app.runner.wait(job.id), 30)
    assert done.status is JobStatus.COMPLETED, done.error_message
    source = kling_server.by_external_id(first.id)
    extend = kling_server.creates()[-1]
    assert source is not None and extend.path == "/v1/videos/video-extend"
    assert extend.json == {"prompt": "the boat drifts under a bridge", "external_task_id": done.id, "video_id": source.video_id}
    assert done.remote_id is not None and done.remote_id.startswith("video-extend:")
    assert_video(done.output_path, width=128, height=72, seconds=10)  # type: ignore[arg-type]


async def test_extend_from_the_last_frame_where_the_model_has_no_extension(make_app: AppFactory, kling_server: KlingServer) -> None:
    app = await make_app()
    first = await run(app, GenerateRequest(prompt="a paper boat on a river", pipeline="kling"))
    job = await app.service.extend(first.id, ORIGIN, prompt="the boat drifts on")
    done = await asyncio.wait_for(app.runner.wait(job.id), 30)
    assert done.status is JobStatus.COMPLETED, done.error_message
    extend = kling_server.creates()[-1]
    assert extend.path == "/v1/videos/image2video" and extend.json["external_task_id"] == done.id
    sent = sent_image(extend)
    tail = last_frame(Path(first.output_path)).resize(sent.size)  # type: ignore[arg-type]
    diff = max(abs(a - b) for a, b in zip(sent.resize((16, 9)).tobytes(), tail.resize((16, 9)).tobytes()))
    assert diff < 40, "the new clip starts from the source's last frame"
    assert_video(done.output_path, width=128, height=72, seconds=10)  # type: ignore[arg-type]


# --- the exactly-once create --------------------------------------------------------------------


async def _interrupted_create(app: App, server: KlingServer, *, pipeline: str = "kling", sent_ago: float = 30) -> Job:
    """A job as a SIGKILL between the create call and the id write leaves it (`submit_sent_at` in its state)."""
    server.hold = True
    job = await app.service.submit(GenerateRequest(prompt="cut off mid-create", pipeline=pipeline), ORIGIN)
    running = await until_job(app, job.id, lambda j: j.remote_id is not None, "the create is answered")
    await app.runner.stop()
    state = {**running.state, "submit_sent_to": "kling", "submit_sent_at": time.time() - sent_ago}
    await app.store.update(job.id, status=JobStatus.SUBMITTING, remote_id=None, state=state)
    await app.close()
    return running.model_copy(update={"state": state})


@pytest.mark.parametrize("pipeline", ["kling", "gpt-image+kling"])
async def test_restart_adopts_the_task_by_external_id_with_one_create(
    make_app: AppFactory, kling_server: KlingServer, pipeline: str
) -> None:
    before = await _interrupted_create(await make_app(), kling_server, pipeline=pipeline)
    kling_server.hold = False
    again = await make_app()
    done = await asyncio.wait_for(again.runner.wait(before.id), 30)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.remote_id == before.remote_id
    assert len(kling_server.creates()) == 1 and len(kling_server.tasks) == 1
    lookups = [c for c in kling_server.calls("GET", "/v1/videos/") if c.query.get("external_task_id") == before.id]
    assert lookups, "the task was read back by our job id"
    assert_video(done.output_path, width=128, height=72, seconds=5)  # type: ignore[arg-type]


async def test_a_create_that_never_arrived_is_sent_once_more_after_the_grace(make_app: AppFactory, kling_server: KlingServer) -> None:
    before = await _interrupted_create(await make_app(), kling_server, sent_ago=0)
    kling_server.tasks.clear()  # as if the create never reached Kling
    kling_server.hold = False
    again = await make_app(KLING_ABSENCE_GRACE_SECONDS="0.3")
    done = await asyncio.wait_for(again.runner.wait(before.id), 30)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert len(kling_server.creates()) == 2 and len(kling_server.tasks) == 1
    (task,) = kling_server.tasks.values()
    assert task.external_id == before.id and done.remote_id != before.remote_id
    # Both lookups (before and after the grace) missed on every kind of task before the resend.
    # The resend came only after a lookup on every kind of task missed once the grace had passed.
    resent = kling_server.creates()[-1]
    lookups = [r for r in kling_server.requests if r.query.get("external_task_id") == before.id]
    assert lookups and all(r.at <= resent.at for r in lookups)
    late = [r.path for r in lookups if r.at >= before.state["submit_sent_at"] + 0.3]
    assert sorted(p.rsplit("/", 1)[1] for p in late[-3:]) == ["image2video", "text2video", "video-extend"]


async def test_a_create_whose_answer_was_lost_is_read_back_not_resent(make_app: AppFactory, kling_server: KlingServer) -> None:
    kling_server.fail("POST", "/v1/videos/text2video", 502, 5000, after=True)
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a lost answer", pipeline="kling"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(kling_server.creates()) == 1 and len(kling_server.tasks) == 1
    assert job.remote_id == f"text2video:{kling_server.by_external_id(job.id).id}"  # type: ignore[union-attr]


# --- limits, refusals, cancel -----------------------------------------------------------------


async def test_a_429_on_create_is_waited_out(make_app: AppFactory, kling_server: KlingServer) -> None:
    kling_server.fail("POST", "/v1/videos/", 429, 1302, times=3, headers={"Retry-After": "0.05"})
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a popular model", pipeline="kling"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(kling_server.creates()) == 4 and len(kling_server.tasks) == 1  # refused three times, made once
    events = [e["detail"] or "" for e in await app.store.events(job.id)]
    assert any("rate limited by kling" in d for d in events)


async def test_a_prompt_klings_review_refuses_fails_without_retry_or_fallback(make_app: AppFactory, kling_server: KlingServer) -> None:
    app = await make_app(VIDEOBOT_FALLBACKS="kling:local")
    job = await run(app, GenerateRequest(prompt="something forbidden", pipeline="kling"))
    assert job.status is JobStatus.FAILED and job.error_code == "content_policy" and job.pipeline == "kling"
    assert "fallbacks" not in job.state and len(kling_server.creates()) == 1


async def test_an_output_stopped_in_review_is_a_content_refusal(make_app: AppFactory, kling_server: KlingServer) -> None:
    app = await make_app(VIDEOBOT_FALLBACKS="kling:local")
    job = await run(app, GenerateRequest(prompt="an unsafe output", pipeline="kling"))
    assert job.status is JobStatus.FAILED and job.error_code == "content_policy"
    assert "risk control" in (job.error_message or "") and len(kling_server.creates()) == 1


async def test_a_wrong_secret_is_refused_by_kling_as_not_configured(make_app: AppFactory, kling_server: KlingServer) -> None:
    app = await make_app(KLING_SECRET_KEY="not-the-secret-but-long-enough-for-hs256")
    job = await run(app, GenerateRequest(prompt="a fox", pipeline="kling"))
    assert job.status is JobStatus.FAILED and job.error_code == "not_configured"
    assert kling_server.tasks == {} and len(kling_server.creates()) == 1


async def test_without_keys_kling_is_listed_but_not_configured(make_app: AppFactory, kling_server: KlingServer) -> None:
    app = await make_app(KLING_ACCESS_KEY=None, VIDEOBOT_FALLBACKS="kling:local")
    assert app.registry.chains()["gpt-image+kling"] == "KLING_ACCESS_KEY and KLING_SECRET_KEY are not set"  # type: ignore[attr-defined]
    job = await run(app, GenerateRequest(prompt="a fox", pipeline="kling", seconds=2, size="256x144"))
    assert job.status is JobStatus.COMPLETED and job.pipeline == "local" and kling_server.requests == []


async def test_cancel_stops_the_job_and_sends_nothing_kling_has_no_cancel_call(make_app: AppFactory, kling_server: KlingServer) -> None:
    kling_server.hold = True
    app = await make_app()
    job = await app.service.submit(GenerateRequest(prompt="a very long take", pipeline="kling"), ORIGIN)
    await until_job(app, job.id, lambda j: j.remote_id is not None and j.status is JobStatus.RUNNING, "the task runs")
    await app.service.cancel(job.id, Actor.of(ORIGIN))
    done = await asyncio.wait_for(app.runner.wait(job.id), 10)
    assert done.status is JobStatus.CANCELLED and done.output_path is None
    assert {r.method for r in kling_server.requests} == {"POST", "GET"} and len(kling_server.creates()) == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KLING_MODE": "ultra"}, "Invalid setting KLING_MODE='ultra'"),
        ({"KLING_BASE_URL": "api.klingai.com"}, "Invalid setting KLING_BASE_URL='api.klingai.com'"),
        ({"KLING_CFG_SCALE": "3"}, "Invalid setting KLING_CFG_SCALE='3'"),
    ],
)
def test_a_bad_kling_setting_stops_start_up_naming_it(settings: Settings, monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                      message: str) -> None:  # fmt: skip
    from bot.core.errors import ConfigError

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings()
