"""The Replicate provider on its own, with the official client against the loopback emulator:
the output fetched the moment a prediction succeeds (Replicate deletes it after an hour), progress
from the model's logs, error answers mapped to the taxonomy, a create never repeated when its
answer is lost, and the catalogue and schema checks."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from providers.base import RemoteStatus, VideoRequest
from providers.errors import ContentExpired, InvalidRequest, ModelUnavailable, NotConfigured, ProviderError, Unavailable
from providers.polling import PollPolicy
from providers.replicate import ReplicateVideoProvider, ref_seed
from providers.replicate_models import CATALOGUE_PATH, InputSchema, load_catalogue
from tests.fakes.replicate_server import SCHEMAS, TOKEN, ReplicateServer
from tests.helpers import assert_video

FAST = PollPolicy(interval=0.01, min_interval=0.01, backoff_base=0.01, backoff_max=0.02)


@pytest.fixture
async def provider(replicate_server: ReplicateServer, tmp_path: Path) -> AsyncIterator[ReplicateVideoProvider]:
    video = ReplicateVideoProvider(api_token=TOKEN, work_dir=tmp_path / "rp", base_url=replicate_server.base_url,
                                   poll_seconds=0.01, policy=FAST)  # fmt: skip
    yield video
    await video.aclose()


def request(**kw: object) -> VideoRequest:
    return VideoRequest(**{"prompt": "a kite", "seconds": 5, "size": "1280x720", "client_ref": "job-1", **kw})  # type: ignore[arg-type]


async def test_the_output_is_fetched_when_the_prediction_succeeds(
    provider: ReplicateVideoProvider, replicate_server: ReplicateServer, tmp_path: Path
) -> None:
    job = await provider.submit(request())
    progress = []
    while (polled := await provider.poll(job.id)).status is not RemoteStatus.COMPLETED:
        progress.append(polled.progress)
    assert any(1 < p < 100 for p in progress), "the model's logged percentages"
    replicate_server.predictions[job.id].expired = True  # an hour later, Replicate deletes the file
    await provider.download(job.id, tmp_path / "out.mp4")
    assert_video(tmp_path / "out.mp4", width=128, height=72, seconds=5)
    assert len(replicate_server.calls("GET", "/files/")) == 1


async def test_an_output_replicate_deleted_is_content_expired(
    provider: ReplicateVideoProvider, replicate_server: ReplicateServer, tmp_path: Path
) -> None:
    job = await provider.submit(request())
    prediction = replicate_server.predictions[job.id]
    replicate_server.steps = 0
    await replicate_server._advance(prediction)
    await replicate_server._advance(prediction)
    prediction.expired = True
    with pytest.raises(ContentExpired, match="keeps outputs for an hour"):
        await provider.download(job.id, tmp_path / "out.mp4")


async def test_a_create_whose_answer_is_lost_is_not_sent_again(provider: ReplicateVideoProvider, replicate_server: ReplicateServer) -> None:
    replicate_server.fail("POST", "/v1/models/", 502)
    with pytest.raises(ProviderError, match="not billed twice"):
        await provider.submit(request())
    assert len(replicate_server.creates()) == 1


async def test_a_503_refusal_is_sent_again(provider: ReplicateVideoProvider, replicate_server: ReplicateServer) -> None:
    replicate_server.fail("POST", "/v1/models/", 503, times=2)
    job = await provider.submit(request())
    assert len(replicate_server.creates()) == 3 and list(replicate_server.predictions) == [job.id]


@pytest.mark.parametrize(("status", "error"), [(401, NotConfigured), (402, Unavailable), (404, ModelUnavailable)])
async def test_create_errors_map_to_the_taxonomy(
    provider: ReplicateVideoProvider, replicate_server: ReplicateServer, status: int, error: type[Exception]
) -> None:
    replicate_server.fail("POST", "/v1/models/", status)
    with pytest.raises(error):
        await provider.submit(request())
    assert replicate_server.predictions == {}


async def test_a_model_replicate_does_not_have_is_unavailable(provider: ReplicateVideoProvider, replicate_server: ReplicateServer) -> None:
    del replicate_server.schemas["wan-video/wan-2.5-t2v"]
    with pytest.raises(ModelUnavailable, match="no model 'wan-video/wan-2.5-t2v'"):
        await provider.submit(request())
    assert replicate_server.creates() == []


async def test_cancel_of_a_finished_prediction_is_quiet(provider: ReplicateVideoProvider, replicate_server: ReplicateServer) -> None:
    job = await provider.submit(request())
    await provider.cancel(job.id)
    await provider.cancel(job.id)
    assert replicate_server.predictions[job.id].status == "canceled"
    assert (await provider.poll(job.id)).status is RemoteStatus.CANCELLED


def test_without_a_seed_the_input_carries_one_derived_from_our_job_id() -> None:
    assert ref_seed("job-1") == ref_seed("job-1") != ref_seed("job-2")
    assert 0 <= ref_seed("job-1") < 2**31


async def test_arguments_without_a_user_seed(provider: ReplicateVideoProvider) -> None:
    assert (await provider.arguments(request()))["seed"] == ref_seed("job-1")
    assert (await provider.arguments(request(seed=3)))["seed"] == 3


def test_validate_refuses_before_anything_is_sent(provider: ReplicateVideoProvider, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="832x480, 480x832, 1280x720"):
        provider.validate(request(size="1024x1024"))
    with pytest.raises(InvalidRequest, match="5 or 10 seconds"):
        provider.validate(request(seconds=7))
    with pytest.raises(InvalidRequest, match="animates an image"):
        provider.validate(request(model="wan-video/wan-2.5-i2v"))
    with pytest.raises(InvalidRequest, match="from text alone"):
        provider.validate(request(input_image=tmp_path / "x.png", model="tencent/hunyuan-video"))
    with pytest.raises(InvalidRequest, match="not a Replicate model"):
        provider.validate(request(model="no-slash"))


def test_the_schema_resolves_cog_enums_and_names_each_problem() -> None:
    schema = InputSchema.from_openapi(SCHEMAS["lightricks/ltx-video"])
    assert schema is not None
    assert schema.problems({"prompt": "x", "length": 97, "target_size": 1024, "aspect_ratio": "16:9"}) == []
    assert schema.problems({"length": 98, "cfg": 40, "extra": 1}) == [
        "extra is not an input of this model", "prompt is required", "length must be one of 97, 129, 161, 193, 225, 257",
        "cfg must be at most 20",
    ]  # fmt: skip


def test_a_catalogue_row_without_a_price_is_refused(tmp_path: Path) -> None:
    table = json.loads(CATALOGUE_PATH.read_text())
    del table["models"][0]["price"]
    path = tmp_path / "models.json"
    path.write_text(json.dumps(table))
    with pytest.raises(ValueError, match="row 'wan-video/wan-2.5-t2v': 'price' needs per_second or per_run"):
        load_catalogue(path)


def test_prices_per_second_by_resolution_and_per_run(provider: ReplicateVideoProvider) -> None:
    assert provider.estimate_cost(request(size="832x480")) == pytest.approx(0.25)
    assert provider.estimate_cost(request(size="1920x1080", seconds=10)) == pytest.approx(1.5)
    assert provider.estimate_cost(request(model="tencent/hunyuan-video", seconds=4, size="960x544")) == pytest.approx(0.40)
    provider.prices = {"tencent/hunyuan-video@run": 0.9, "wan-video/wan-2.5-t2v": 0.2}
    assert provider.estimate_cost(request(model="tencent/hunyuan-video", seconds=4, size="960x544")) == pytest.approx(0.9)
    assert provider.estimate_cost(request()) == pytest.approx(1.0)
