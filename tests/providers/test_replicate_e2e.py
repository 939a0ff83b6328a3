"""The Replicate pipelines through the real core (service, runner, store), with the official
`replicate` client against the loopback Replicate emulator: text and image to video, a chain,
other catalogue models and a pinned version, inputs checked against the model's own schema,
cancel, a 429 waited out, a safety refusal, and an interrupted create settled by listing the
account's predictions (adopted, sent again after the grace, or refused when two match)."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.app import App
from bot.config import Settings
from bot.core.errors import ConfigError
from bot.core.models import Actor, GenerateRequest, Job, JobStatus, Origin
from providers.errors import InvalidRequest
from providers.replicate_models import CATALOGUE_PATH
from tests.apps import AppFactory, AppMaker, run_job, until_job
from tests.fakes.openai_server import OpenAIEmulator
from tests.fakes.kling_server import KlingServer
from tests.fakes.replicate_server import TOKEN, ReplicateServer, sent_image
from tests.helpers import assert_video

ORIGIN = Origin(platform="cli", user_id="tester")
T2V, I2V = "wan-video/wan-2.5-t2v", "wan-video/wan-2.5-i2v"


@pytest.fixture
async def make_app(
    settings: Settings, replicate_server: ReplicateServer, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AppFactory]:
    """An app on the Replicate (and OpenAI) emulators; keyword arguments are extra env vars (None removes one)."""
    async with AppMaker(monkeypatch, {
        "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": replicate_server.base_url, "REPLICATE_POLL_SECONDS": "0.01",
        "REPLICATE_RETRY_BACKOFF_SECONDS": "0.01",
        **openai_server.env,
    }) as apps:  # fmt: skip
        yield apps.make


async def run(app: App, request: GenerateRequest) -> Job:
    return await run_job(app, request, ORIGIN)


# --- text and image to video ------------------------------------------------------------------


async def test_text_to_video_with_the_official_client(make_app: AppFactory, replicate_server: ReplicateServer) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a lighthouse in a storm", pipeline="replicate"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (create,) = replicate_server.creates()
    assert create.path == f"/v1/models/{T2V}/predictions" and create.headers["User-Agent"].startswith("replicate-python/")
    assert create.json["input"] == {
        "prompt": "a lighthouse in a storm", "duration": 5, "size": "1280*720", "seed": job.params.seed,
        "enable_prompt_expansion": False,
    }  # fmt: skip
    assert job.params.seed is not None  # the job's seed is in the input: what names it when listing after a crash
    assert [r.path for r in replicate_server.calls("GET", "/v1/models/")] == [f"/v1/models/{T2V}"]  # the schema, read once
    (prediction,) = replicate_server.predictions.values()
    assert (job.provider, job.model, job.remote_id) == ("replicate", T2V, prediction.id)
    assert job.cost_estimate == pytest.approx(0.50)
    assert_video(job.output_path, width=128, height=72, seconds=5)  # type: ignore[arg-type]


async def test_a_users_image_goes_to_the_image_model_cropped_to_the_size(
    make_app: AppFactory, replicate_server: ReplicateServer, tmp_path: Path
) -> None:
    app = await make_app()
    picture = tmp_path / "pic.png"
    Image.new("RGB", (900, 1400), (30, 200, 40)).save(picture)
    job = await run(app, GenerateRequest(prompt="the leaves flutter", pipeline="replicate", image_path=picture, size="720x1280", seconds=10))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (create,) = replicate_server.creates()
    assert create.path == f"/v1/models/{I2V}/predictions"
    assert create.json["input"]["resolution"] == "720p" and create.json["input"]["duration"] == 10
    image = sent_image(create)
    assert image.size == (720, 1280)
    r, g, b = image.getpixel((360, 640))
    assert g > 180 and r < 60 and b < 60
    assert job.cost_estimate == pytest.approx(1.0)
    assert_video(job.output_path, width=72, height=128, seconds=10)  # type: ignore[arg-type]


async def test_gpt_image_then_replicate(make_app: AppFactory, replicate_server: ReplicateServer, openai_server: OpenAIEmulator) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a red fox in fresh snow", pipeline="gpt-image+replicate"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(openai_server.calls("image")) == 1
    (create,) = replicate_server.creates()
    assert create.path == f"/v1/models/{I2V}/predictions" and sent_image(create).size == (1280, 720)
    assert_video(job.output_path, width=128, height=72, seconds=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "seconds", "size", "sent", "video"),
    [
        ("tencent/hunyuan-video", 4, "960x544", {"width": 960, "height": 544, "video_length": 97, "fps": 24}, (96, 54)),
        ("lightricks/ltx-video", 8, "1024x576", {"aspect_ratio": "16:9", "target_size": 1024, "length": 193}, (102, 57)),
    ],
)
async def test_other_catalogue_models_by_name(
    make_app: AppFactory, replicate_server: ReplicateServer, model: str, seconds: int, size: str, sent: dict[str, object],
    video: tuple[int, int],
) -> None:  # fmt: skip
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a slow glacier", pipeline="replicate", model=model, seconds=seconds, size=size))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (create,) = replicate_server.creates()
    assert create.path == f"/v1/models/{model}/predictions"
    assert {k: create.json["input"][k] for k in sent} == sent
    width, height = video
    assert_video(job.output_path, width=width - width % 2, height=height - height % 2, seconds=seconds)  # type: ignore[arg-type]


async def test_a_pinned_version_is_created_by_version(make_app: AppFactory, replicate_server: ReplicateServer) -> None:
    version = replicate_server.versions[T2V]
    app = await make_app(REPLICATE_VIDEO_MODEL=f"{T2V}:{version}")
    job = await run(app, GenerateRequest(prompt="a kite", pipeline="replicate"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (create,) = replicate_server.creates()
    assert create.path == "/v1/predictions" and create.json["version"] == version
    assert [r.path for r in replicate_server.calls("GET", "/v1/models/")][-1] == f"/v1/models/{T2V}/versions/{version}"


# --- the catalogue and the model's schema -------------------------------------------------------


async def test_a_catalogue_row_that_drifted_from_the_schema_is_refused_before_the_create(
    make_app: AppFactory, replicate_server: ReplicateServer
) -> None:
    replicate_server.schemas[T2V]["components"]["schemas"]["size"]["enum"] = ["1280*704", "704*1280"]
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a kite", pipeline="replicate"))
    assert job.status is JobStatus.FAILED and job.error_code == "invalid_request"
    assert T2V in (job.error_message or "") and "size must be one of 1280*704, 704*1280" in (job.error_message or "")
    assert replicate_server.creates() == [] and job.cost_actual in (None, 0)


async def test_a_model_without_prompt_or_image_input_is_refused_with_its_name(
    make_app: AppFactory, replicate_server: ReplicateServer, tmp_path: Path
) -> None:
    table = json.loads(CATALOGUE_PATH.read_text())
    table["models"].append({"model": "acme/video-upscaler", "prompt": "prompt", "duration": {"param": "seconds", "choices": [5]},
                            "size": {"width": "width", "height": "height"}, "sizes": ["1280x720"], "price": {"per_run": 0.01}})  # fmt: skip
    path = tmp_path / "models.json"
    path.write_text(json.dumps(table))
    app = await make_app(REPLICATE_MODELS_FILE=str(path))
    job = await run(app, GenerateRequest(prompt="sharper", pipeline="replicate", model="acme/video-upscaler"))
    assert job.status is JobStatus.FAILED and "acme/video-upscaler takes neither a prompt nor an image" in (job.error_message or "")
    assert replicate_server.creates() == []


async def test_an_unknown_model_is_refused_until_it_has_a_catalogue_row(make_app: AppFactory, replicate_server: ReplicateServer) -> None:
    app = await make_app()
    with pytest.raises(InvalidRequest, match="not in the model catalogue") as info:
        await app.service.submit(GenerateRequest(prompt="x", pipeline="replicate", model="someone/new-video"), ORIGIN)
    assert str(CATALOGUE_PATH) in str(info.value)
    with pytest.raises(ConfigError, match="REPLICATE_VIDEO_MODEL=someone/new-video has no row"):
        await make_app(REPLICATE_VIDEO_MODEL="someone/new-video")
    assert await app.store.list() == [] and replicate_server.requests == []


# --- cancel, limits, refusals -----------------------------------------------------------------


async def test_cancel_reaches_replicate(make_app: AppFactory, replicate_server: ReplicateServer) -> None:
    replicate_server.hold = True
    app = await make_app()
    job = await app.service.submit(GenerateRequest(prompt="a very long take", pipeline="replicate"), ORIGIN)
    running = await until_job(app, job.id, lambda j: j.remote_id is not None and j.status is JobStatus.RUNNING, "the prediction runs")
    await app.service.cancel(job.id, Actor.of(ORIGIN))
    done = await asyncio.wait_for(app.runner.wait(job.id), 10)
    assert done.status is JobStatus.CANCELLED
    assert [r.path for r in replicate_server.calls("POST", "/v1/predictions/")] == [f"/v1/predictions/{running.remote_id}/cancel"]
    assert replicate_server.predictions[running.remote_id].status == "canceled"  # type: ignore[index]


async def test_a_429_on_create_is_waited_out(make_app: AppFactory, replicate_server: ReplicateServer) -> None:
    replicate_server.fail("POST", "/v1/models/", 429, times=4, detail="Request was throttled. Expected available in 1 second.")
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a popular model", pipeline="replicate"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(replicate_server.creates()) == 5 and len(replicate_server.predictions) == 1
    events = [e["detail"] or "" for e in await app.store.events(job.id)]
    assert any("rate limited by replicate" in d for d in events)


async def test_a_safety_refusal_fails_without_fallback(make_app: AppFactory, replicate_server: ReplicateServer) -> None:
    app = await make_app(VIDEOBOT_FALLBACKS="replicate:local")
    job = await run(app, GenerateRequest(prompt="something forbidden", pipeline="replicate"))
    assert job.status is JobStatus.FAILED and job.error_code == "content_policy" and job.pipeline == "replicate"
    assert "flagged as sensitive" in (job.error_message or "") and "fallbacks" not in job.state
    assert len(replicate_server.creates()) == 1


async def test_a_bad_token_is_not_configured(make_app: AppFactory, replicate_server: ReplicateServer) -> None:
    app = await make_app(REPLICATE_API_TOKEN="r8_wrong")
    job = await run(app, GenerateRequest(prompt="a fox", pipeline="replicate"))
    assert job.status is JobStatus.FAILED and job.error_code == "not_configured" and replicate_server.predictions == {}


# --- an interrupted create, settled by listing -----------------------------------------------------


async def _interrupted_create(app: App, server: ReplicateServer, *, sent_ago: float = 30) -> Job:
    """A job as a SIGKILL between the create call and the id write leaves it."""
    server.hold = True
    job = await app.service.submit(GenerateRequest(prompt="cut off mid-create", pipeline="replicate"), ORIGIN)
    running = await until_job(app, job.id, lambda j: j.remote_id is not None, "the create is answered")
    await app.runner.stop()
    state = {**running.state, "submit_sent_to": "replicate", "submit_sent_at": time.time() - sent_ago}
    await app.store.update(job.id, status=JobStatus.SUBMITTING, remote_id=None, state=state)
    await app.close()
    return running.model_copy(update={"state": state})


async def test_restart_adopts_our_prediction_from_the_list_with_one_create(make_app: AppFactory, replicate_server: ReplicateServer) -> None:
    replicate_server.page_size = 2
    before = await _interrupted_create(await make_app(), replicate_server)
    # Other clients of the account: the same prompt with another seed, and newer predictions on top.
    replicate_server.add_prediction(T2V, {"prompt": "cut off mid-create", "duration": 5, "size": "1280*720", "seed": 7})
    for n in range(3):
        replicate_server.add_prediction(T2V, {"prompt": f"another {n}", "duration": 5, "size": "1280*720", "seed": n})
    replicate_server.hold = False
    again = await make_app()
    done = await asyncio.wait_for(again.runner.wait(before.id), 30)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.remote_id == before.remote_id and len(replicate_server.creates()) == 1
    assert len(replicate_server.calls("GET", "/v1/predictions")) > 0
    assert any(r.query.get("cursor") for r in replicate_server.calls("GET", "/v1/predictions")), "the list was paged"
    assert_video(done.output_path, width=128, height=72, seconds=5)  # type: ignore[arg-type]


async def test_a_create_that_never_arrived_is_sent_again_after_the_grace(make_app: AppFactory, replicate_server: ReplicateServer) -> None:
    before = await _interrupted_create(await make_app(), replicate_server, sent_ago=0)
    replicate_server.predictions.clear()  # as if the create never reached Replicate
    replicate_server.hold = False
    again = await make_app(REPLICATE_ABSENCE_GRACE_SECONDS="0.3")
    done = await asyncio.wait_for(again.runner.wait(before.id), 30)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert len(replicate_server.creates()) == 2 and len(replicate_server.predictions) == 1
    resent = replicate_server.creates()[-1]
    lists = [r for r in replicate_server.calls("GET", "/v1/predictions") if r.path == "/v1/predictions"]
    assert any(r.at >= before.state["submit_sent_at"] + 0.3 for r in lists) and all(r.at <= resent.at for r in lists)


async def test_two_matching_predictions_are_not_guessed_between(make_app: AppFactory, replicate_server: ReplicateServer) -> None:
    before = await _interrupted_create(await make_app(), replicate_server)
    ours = replicate_server.predictions[before.remote_id]  # type: ignore[index]
    replicate_server.add_prediction(T2V, dict(ours.input))
    replicate_server.hold = False
    again = await make_app()
    done = await asyncio.wait_for(again.runner.wait(before.id), 30)
    assert done.status is JobStatus.FAILED and "not sent again" in (done.error_message or "")
    assert len(replicate_server.creates()) == 1


# --- stills ---------------------------------------------------------------------------------------


async def test_an_image_job_on_replicate(make_app: AppFactory, replicate_server: ReplicateServer) -> None:
    from bot.core.models import JobKind

    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a teal coupe", kind=JobKind.IMAGE, pipeline="replicate-image", size="1344x768"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (create,) = replicate_server.creates()
    assert create.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert {k: create.json["input"][k] for k in ("prompt", "aspect_ratio", "output_format")} == {
        "prompt": "a teal coupe", "aspect_ratio": "16:9", "output_format": "png",
    }  # fmt: skip
    assert Image.open(job.output_path).size == (1344, 768)  # type: ignore[arg-type]
    assert job.cost_estimate == pytest.approx(0.003)


async def test_a_replicate_still_animated_by_kling(
    make_app: AppFactory, replicate_server: ReplicateServer, kling_server: KlingServer
) -> None:
    from tests.fakes.kling_server import ACCESS_KEY, SECRET_KEY
    from tests.fakes.kling_server import sent_image as kling_image

    app = await make_app(KLING_ACCESS_KEY=ACCESS_KEY, KLING_SECRET_KEY=SECRET_KEY, KLING_BASE_URL=kling_server.base_url,
                         KLING_POLL_SECONDS="0.01")  # fmt: skip
    job = await run(app, GenerateRequest(prompt="a lighthouse at dusk", pipeline="replicate-image+kling"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (still,) = replicate_server.creates()
    assert still.json["input"]["aspect_ratio"] == "16:9"  # made in the nearest shape, then cropped
    (create,) = kling_server.creates()
    assert create.path == "/v1/videos/image2video" and kling_image(create).size == (1280, 720)
    assert job.cost_estimate == pytest.approx(0.003 + 0.21)
    assert_video(job.output_path, width=128, height=72, seconds=5)  # type: ignore[arg-type]
