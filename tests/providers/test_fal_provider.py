"""Contract tests: the fal provider's httpx client against the loopback queue emulator.

Assertions read what crossed the wire (paths, headers, JSON inputs) and what came back
(queue positions, progress, real MP4s, the error taxonomy).
"""
from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from providers.base import RemoteJob, RemoteStatus, VideoRequest
from providers.errors import (
    ContentPolicyRejected,
    GenerationFailed,
    InvalidRequest,
    ModelUnavailable,
    NotConfigured,
    ProviderError,
    ProviderInvalidRequest,
    RateLimited,
    TransientError,
)
from providers.fal import TABLE_PATH, FalVideoProvider, load_table
from providers.polling import PollPolicy
from tests.fakes.fal_server import KEY, FalServer, fal_server  # noqa: F401
from tests.helpers import assert_video

KLING_T2V = "fal-ai/kling-video/v2.5-turbo/pro/text-to-video"
KLING_I2V = "fal-ai/kling-video/v2.5-turbo/pro/image-to-video"


def make(server: FalServer, tmp_path: Path, **kw: object) -> FalVideoProvider:
    options: dict[str, object] = {
        "key": KEY, "work_dir": tmp_path / "fal-provider", "queue_url": server.base_url, "poll_seconds": 0.0,
        "policy": PollPolicy(backoff_base=0.01, backoff_max=0.02),
    }  # fmt: skip
    options.update(kw)
    return FalVideoProvider(**options)  # type: ignore[arg-type]


@pytest.fixture
async def fal(fal_server: FalServer, tmp_path: Path) -> AsyncIterator[FalVideoProvider]:
    provider = make(fal_server, tmp_path)
    try:
        yield provider
    finally:
        await provider.aclose()


def request(**kw: object) -> VideoRequest:
    values: dict[str, object] = {"prompt": "a red kite over the sea", "seconds": 5, "size": "1280x720", "seed": 7}
    values.update(kw)
    return VideoRequest(**values)  # type: ignore[arg-type]


async def until_done(provider: FalVideoProvider, remote_id: str) -> list[RemoteJob]:
    seen: list[RemoteJob] = []
    deadline = time.monotonic() + 10
    while not (seen and seen[-1].done):
        assert time.monotonic() < deadline, seen
        seen.append(await provider.poll(remote_id))
    return seen


# --- the queue protocol -----------------------------------------------------------------------


async def test_text_to_video_submit_status_result_and_download(fal: FalVideoProvider, fal_server: FalServer, tmp_path: Path) -> None:
    fal.validate(request())
    job = await fal.submit(request())
    assert job.status is RemoteStatus.QUEUED and job.model == KLING_T2V and job.note == "queued at fal, next in line"
    (sent,) = fal_server.submits()
    assert sent.path == f"/{KLING_T2V}" and sent.headers["Authorization"] == f"Key {KEY}"
    # Kling takes duration as a string and has no seed; the table says so, not code.
    assert sent.json == {"prompt": "a red kite over the sea", "duration": "5", "aspect_ratio": "16:9"}

    seen = await until_done(fal, job.id)
    assert [j.status for j in seen][-1] is RemoteStatus.COMPLETED
    progress = [j.progress for j in seen if j.status is RemoteStatus.IN_PROGRESS]
    assert progress == sorted(progress) and progress[0] >= 1 and max(progress) < 100  # from the model's log lines
    statuses = fal_server.calls("GET", "/status")
    assert all(r.query == {"logs": "1"} for r in statuses)
    # Status and result live under owner/alias, not under the endpoint's subpath.
    assert statuses[0].path.startswith("/fal-ai/kling-video/requests/")

    out = tmp_path / "out.mp4"
    await fal.download(job.id, out)
    assert_video(out, width=128, height=72, seconds=5)


async def test_queue_positions_are_shown_while_waiting(fal: FalVideoProvider, fal_server: FalServer) -> None:
    first = await fal.submit(request(prompt="first"))
    second = await fal.submit(request(prompt="second"))
    third = await fal.submit(request(prompt="third"))
    assert (second.note, third.note) == ("queued at fal, next in line", "queued at fal, 1 ahead")
    assert (await fal.poll(third.id)).note == "queued at fal, 1 ahead"
    assert (await fal.poll(first.id)).status is RemoteStatus.IN_PROGRESS
    await until_done(fal, first.id)
    waiting = await fal.poll(third.id)
    assert waiting.status is RemoteStatus.QUEUED and waiting.note == "queued at fal, next in line"
    assert (await fal.poll(second.id)).status is RemoteStatus.IN_PROGRESS


async def test_the_table_shapes_each_familys_input(fal_server: FalServer, tmp_path: Path) -> None:
    veo = make(fal_server, tmp_path, video_model="fal-ai/veo3.1", negative_prompt="blurry")
    wan = make(fal_server, tmp_path, video_model="fal-ai/wan/v2.2-a14b/text-to-video")
    try:
        assert (veo.default_seconds, veo.default_size) == (4, "1280x720")
        r = request(seconds=8, size="1080x1920", audio=True)
        veo.validate(r)
        assert veo.estimate_cost(r) == pytest.approx(3.20)  # $0.40/s with sound
        assert veo.estimate_cost(r.model_copy(update={"audio": False})) == pytest.approx(1.60)
        job = await veo.submit(r)
        assert fal_server.submits()[-1].json == {
            "prompt": "a red kite over the sea", "duration": "8s", "aspect_ratio": "9:16", "resolution": "1080p",
            "negative_prompt": "blurry", "seed": 7, "generate_audio": True,
        }  # fmt: skip
        await until_done(veo, job.id)
        await veo.download(job.id, tmp_path / "veo.mp4")
        assert_video(tmp_path / "veo.mp4", width=108, height=192, seconds=8)

        small = request(seconds=5, size="854x480")
        wan.validate(small)
        assert wan.estimate_cost(small) == pytest.approx(0.20)  # the 480p price, $0.04/s
        job = await wan.submit(small)
        sent = fal_server.submits()[-1].json
        assert (sent["num_frames"], sent["frames_per_second"], sent["resolution"]) == (81, 16, "480p")
        assert sent["aspect_ratio"] == "16:9" and "generate_audio" not in sent
        await until_done(wan, job.id)
    finally:
        await veo.aclose()
        await wan.aclose()


async def test_image_to_video_sends_the_image_cropped_to_the_video(fal: FalVideoProvider, fal_server: FalServer, tmp_path: Path) -> None:
    picture = tmp_path / "in.png"
    Image.new("RGB", (1000, 1000), (20, 200, 40)).save(picture)
    r = request(input_image=picture, seconds=10)
    fal.validate(r)
    assert fal.estimate_cost(r) == pytest.approx(0.70)
    job = await fal.submit(r)
    sent = fal_server.submits()[-1]
    assert sent.path == f"/{KLING_I2V}" and sent.json["duration"] == "10" and "aspect_ratio" not in sent.json
    header, _, payload = sent.json["image_url"].partition(",")
    assert header == "data:image/jpeg;base64"
    assert Image.open(io.BytesIO(base64.b64decode(payload))).size == (1280, 720)
    await until_done(fal, job.id)
    await fal.download(job.id, tmp_path / "i2v.mp4")
    assert_video(tmp_path / "i2v.mp4", width=128, height=72, seconds=10)


def test_requests_the_table_cannot_express_are_refused_before_sending(fal: FalVideoProvider, fal_server: FalServer, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as unknown:
        fal.validate(request(model="fal-ai/some-new-model/text-to-video"))
    assert str(TABLE_PATH) in str(unknown.value) and "fal endpoint table" in str(unknown.value)
    assert fal.estimate_cost(request(model="fal-ai/some-new-model/text-to-video")) is None
    with pytest.raises(InvalidRequest, match="not a fal endpoint id"):
        fal.validate(request(model="../../etc"))
    with pytest.raises(InvalidRequest, match="5 or 10 seconds"):
        fal.validate(request(seconds=8))
    with pytest.raises(InvalidRequest, match=r"16:9, 9:16 or 1:1 videos: ask for a size such as 1280x720, 720x1280 or 720x720"):
        fal.validate(request(size="1024x768"))
    with pytest.raises(InvalidRequest, match="animate an image use an image-to-video endpoint"):
        fal.validate(request(model=KLING_T2V, input_image=tmp_path / "x.png"))
    with pytest.raises(InvalidRequest, match="animates an image"):
        fal.validate(request(model=KLING_I2V))
    ltx = make(fal_server, tmp_path, video_model="fal-ai/ltx-2/text-to-video")
    assert (ltx.default_seconds, ltx.default_size) == (6, "1920x1080")
    with pytest.raises(InvalidRequest, match="1080p, 1440p or 2160p videos: ask for a size such as 1920x1080"):
        ltx.validate(request(seconds=6))
    assert fal_server.requests == []


# --- errors -----------------------------------------------------------------------------------


async def test_a_rejected_key_is_not_configured(fal_server: FalServer, tmp_path: Path) -> None:
    bad = make(fal_server, tmp_path, key="wrong:key")
    try:
        with pytest.raises(NotConfigured):
            await bad.submit(request())
        assert len(fal_server.submits()) == 1
    finally:
        await bad.aclose()
    with pytest.raises(NotConfigured, match="not configured"):
        await make(fal_server, tmp_path, key=None).submit(request())


async def test_429_carries_retry_after_and_503_is_repeated(fal: FalVideoProvider, fal_server: FalServer) -> None:
    fal_server.fail("POST", "/fal-ai/", 429, times=3, headers={"Retry-After": "1"}, body={"detail": "Too many requests"})
    with pytest.raises(RateLimited) as info:
        await fal.submit(request())
    assert info.value.retry_after == 1.0 and len(fal_server.submits()) == 3 and fal_server.queue == {}

    fal_server.fail("POST", "/fal-ai/", 503, times=2)
    job = await fal.submit(request())
    assert len(fal_server.submits()) == 6 and list(fal_server.queue) == [job.id.rpartition("#")[2]]


async def test_an_ambiguous_submit_is_never_repeated(fal: FalVideoProvider, fal_server: FalServer) -> None:
    fal_server.fail("POST", "/fal-ai/", 500)
    with pytest.raises(ProviderError, match="not billed twice") as info:
        await fal.submit(request())
    assert not isinstance(info.value, TransientError) and len(fal_server.submits()) == 1
    # Nothing to look a request up by after a crash: the runner must not send it again.
    assert fal.proves_absence is False
    assert await fal.find_remote("job123", request=request(), sent_at=time.time()) is None


async def test_422_names_the_field_at_submit_and_as_a_result(fal_server: FalServer, tmp_path: Path) -> None:
    # A table row that disagrees with the model: "5s" where Kling wants "5".
    table = json.loads(TABLE_PATH.read_text())
    table["families"][0]["duration"]["format"] = "{}s"
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    wrong = make(fal_server, tmp_path, table=load_table(path))
    try:
        fal_server.validate_on_submit = True
        with pytest.raises(ProviderInvalidRequest, match=r"\(duration\): Input should be '10' or '5'"):
            await wrong.submit(request())
        fal_server.validate_on_submit = False  # like the real queue: the app checks when it runs
        job = await wrong.submit(request())
        failed = (await until_done(wrong, job.id))[-1]
        assert failed.status is RemoteStatus.FAILED
        error = wrong.error_for(failed)
        assert isinstance(error, ProviderInvalidRequest) and "(duration)" in str(error)
    finally:
        await wrong.aclose()


async def test_content_policy_and_failed_requests_map_to_the_taxonomy(fal: FalVideoProvider, fal_server: FalServer) -> None:
    job = await fal.submit(request(prompt="something forbidden"))
    refused = (await until_done(fal, job.id))[-1]
    assert refused.status is RemoteStatus.FAILED and refused.error_code == "content_policy_violation"
    assert isinstance(fal.error_for(refused), ContentPolicyRejected)

    fal_server.next_failures.append(
        (503, {"detail": "The runner disconnected", "error_type": "runner_disconnected"}, {"X-Fal-Error-Type": "runner_disconnected"})
    )
    job = await fal.submit(request())
    failed = (await until_done(fal, job.id))[-1]
    error = fal.error_for(failed)
    assert isinstance(error, GenerationFailed) and error.remote_code == "runner_disconnected"
    assert error.retryable  # fal bills no request that ended in a server error

    fal_server.next_failures.append((500, {"detail": [{"loc": ["body"], "msg": "Generation failed", "type": "generation_error"}]}, {}))
    job = await fal.submit(request())
    error = fal.error_for((await until_done(fal, job.id))[-1])
    assert isinstance(error, GenerationFailed) and error.remote_code == "generation_error"


async def test_an_unknown_endpoint_at_fal_is_unavailable(fal: FalVideoProvider, fal_server: FalServer) -> None:
    with pytest.raises(ModelUnavailable):
        await fal.submit(request(model="fal-ai/kling-video/v2.9/pro/text-to-video"))  # in the table, not at fal


# --- cancel and restart -----------------------------------------------------------------------


async def test_cancel_uses_the_cancel_url(fal: FalVideoProvider, fal_server: FalServer) -> None:
    fal_server.hold = True
    job = await fal.submit(request())
    assert (await fal.poll(job.id)).status is RemoteStatus.IN_PROGRESS
    await fal.cancel(job.id)
    (put,) = fal_server.calls("PUT")
    assert put.path.endswith("/cancel") and put.headers["Authorization"] == f"Key {KEY}"
    assert (await fal.poll(job.id)).status is RemoteStatus.CANCELLED
    await fal.cancel(job.id)  # already over: nothing to do, no error


async def test_a_new_process_finds_the_request_by_its_id(fal_server: FalServer, tmp_path: Path) -> None:
    first = make(fal_server, tmp_path)
    job = await first.submit(request())
    await first.aclose()
    again = make(fal_server, tmp_path)  # a restart: nothing in memory, the URLs kept beside the job
    await until_done(again, job.id)
    await again.download(job.id, tmp_path / "a.mp4")
    assert_video(tmp_path / "a.mp4", width=128, height=72, seconds=5)
    again.forget(job.id)  # the URLs are gone: the documented ones on FAL_QUEUE_URL are built
    assert not list((tmp_path / "fal-provider").iterdir())
    await again.download(job.id, tmp_path / "b.mp4")
    assert (tmp_path / "b.mp4").read_bytes() == (tmp_path / "a.mp4").read_bytes()
    await again.aclose()


# --- the table itself -------------------------------------------------------------------------


def test_the_shipped_table_prices_every_default_and_loads_cleanly() -> None:
    table = load_table()
    for endpoint in (KLING_T2V, KLING_I2V, "fal-ai/veo3.1/fast/image-to-video", "fal-ai/minimax/hailuo-02/standard/text-to-video",
                     "fal-ai/bytedance/seedance/v1/pro/image-to-video", "fal-ai/ltx-2/image-to-video/fast",
                     "fal-ai/wan-25-preview/text-to-video"):  # fmt: skip
        assert table.family(endpoint) is not None and endpoint in table.prices
    assert table.family("fal-ai/kling-video/v3/pro/image-to-video") is None  # Kling 3 takes start_image_url


def test_a_bad_table_row_is_named(tmp_path: Path) -> None:
    table = json.loads(TABLE_PATH.read_text())
    table["families"][2]["aspect_ratio"]["choices"] = ["wide"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(table))
    with pytest.raises(ValueError, match=r"row 'Veo 3.1 text to video': 'aspect_ratio.choices' must be W:H ratios"):
        load_table(path)


def test_settings_name_what_is_wrong(settings: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.config import load_settings
    from bot.core.errors import ConfigError

    for key in [k for k in os.environ if k.startswith("FAL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FAL_PRICES", '{"fal-ai/my/endpoint": 0.5}')
    fal = load_settings().fal
    assert fal.prices == {"fal-ai/my/endpoint": 0.5} and fal.queue_url == "https://queue.fal.run"
    provider = FalVideoProvider(key="k", work_dir=tmp_path, prices=fal.prices)
    assert provider.prices[KLING_T2V] == 0.07 and provider.prices["fal-ai/my/endpoint"] == 0.5  # over the table's
    (tmp_path / "t.json").write_text('{"families": [{"family": "x", "match": ["a/b"]}]}')
    monkeypatch.setenv("FAL_ENDPOINTS_FILE", str(tmp_path / "t.json"))
    with pytest.raises(ConfigError, match=r"FAL_ENDPOINTS_FILE=.*row 'x': 'duration'"):
        load_settings()
    monkeypatch.delenv("FAL_ENDPOINTS_FILE")
    monkeypatch.setenv("FAL_QUEUE_URL", "http://127.0.0.1:9/")
    assert load_settings().fal.queue_url == "http://127.0.0.1:9"
