"""Contract tests: the real `runwayml` SDK against the loopback Runway emulator."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from providers.base import Operation, RemoteStatus, VideoRequest
from providers.errors import (
    ContentExpired,
    ContentPolicyRejected,
    GenerationFailed,
    InvalidRequest,
    ModelUnavailable,
    NotConfigured,
    ProviderError,
    ProviderInvalidRequest,
    Unavailable,
)
from providers.media import probe_video
from providers.polling import PollPolicy, wait_for_completion
from providers.runway import RunwayVideoProvider
from tests.fakes.runway_server import SECRET, RunwayServer
from tests.helpers import assert_video

FAST = PollPolicy(interval=0.01, min_interval=0.01, backoff_base=0.01, backoff_max=0.05)


def make_provider(server: RunwayServer, tmp_path: Path, **kw: object) -> RunwayVideoProvider:
    options: dict[str, object] = {
        "api_secret": SECRET, "base_url": server.base_url, "work_dir": tmp_path / "runway-provider",
        "poll_seconds": 0.01, "policy": FAST, "retired_models": frozenset({"gen3a_turbo"}),
    }  # fmt: skip
    options.update(kw)
    return RunwayVideoProvider(**options)  # type: ignore[arg-type]


def png(path: Path, size: tuple[int, int] = (1600, 900), colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    Image.new("RGB", size, colour).save(path, "PNG")
    return path


def prompt_image_of(body: dict) -> Image.Image:
    header, _, payload = body["promptImage"].partition(",")
    assert header == "data:image/jpeg;base64"
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert image.format == "JPEG"
    return image


async def run(provider: RunwayVideoProvider, request: VideoRequest, dest: Path) -> list[tuple[str, int, str | None]]:
    seen: list[tuple[str, int, str | None]] = []

    async def on_update(job: object) -> None:
        seen.append((job.status.value, job.progress, job.note))  # type: ignore[attr-defined]

    remote = await provider.submit(request)
    done = await wait_for_completion(provider, remote.id, on_update=on_update, policy=FAST)
    assert done.status is RemoteStatus.COMPLETED
    await provider.download(remote.id, dest)
    return seen


async def test_text_to_video_uses_gen45_with_ratio_header_and_cost(runway_server: RunwayServer, tmp_path: Path) -> None:
    provider = make_provider(runway_server, tmp_path)
    request = VideoRequest(prompt="a teal coupe crossing a desert", seconds=5, size="1280x720", seed=7)
    assert provider.estimate_cost(request) == pytest.approx(0.60)  # 12 credits/s x 5 s x $0.01
    try:
        remote = await provider.submit(request)
        seen: list[RemoteStatus] = []

        async def on_update(job: object) -> None:
            seen.append(job.status)  # type: ignore[attr-defined]

        done = await wait_for_completion(provider, remote.id, on_update=on_update, policy=FAST)
        await provider.download(remote.id, tmp_path / "out.mp4")
    finally:
        await provider.aclose()
    (create,) = runway_server.creates()
    assert create.path == "/v1/text_to_video"
    assert create.json == {"model": "gen4.5", "promptText": "a teal coupe crossing a desert", "ratio": "1280:720", "duration": 5, "seed": 7}
    assert create.headers["X-Runway-Version"] == "2024-11-06"
    assert create.headers["Authorization"] == f"Bearer {SECRET}"
    assert seen[0] is RemoteStatus.QUEUED and RemoteStatus.IN_PROGRESS in seen
    assert done.cost == pytest.approx(0.60)
    assert_video(tmp_path / "out.mp4", width=128, height=72, seconds=5)


async def test_image_to_video_sends_smart_cropped_jpeg_data_uri(runway_server: RunwayServer, tmp_path: Path) -> None:
    provider = make_provider(runway_server, tmp_path)
    image = png(tmp_path / "in.png", (1000, 1000))
    request = VideoRequest(prompt="slow push in", seconds=4, size="720x1280", input_image=image)
    try:
        seen = await run(provider, request, tmp_path / "out.mp4")
    finally:
        await provider.aclose()
    (create,) = runway_server.creates()
    assert create.path == "/v1/image_to_video"
    assert create.json["model"] == "gen4_turbo" and create.json["ratio"] == "720:1280"
    sent = prompt_image_of(create.json)
    assert sent.size == (720, 1280)
    assert ("queued", 0, "queued at the provider") in seen
    assert ("in_progress", 50, None) in seen
    assert_video(tmp_path / "out.mp4", width=72, height=128, seconds=4)


async def test_throttled_is_queued_at_the_provider(runway_server: RunwayServer, tmp_path: Path) -> None:
    runway_server.script = ["THROTTLED", "THROTTLED", "RUNNING", "SUCCEEDED"]
    provider = make_provider(runway_server, tmp_path)
    try:
        seen = await run(provider, VideoRequest(prompt="rain", seconds=2, size="1280x720"), tmp_path / "o.mp4")
    finally:
        await provider.aclose()
    assert seen[:2] == [("queued", 0, "queued at the provider")] * 2


async def test_large_image_goes_as_ephemeral_upload(runway_server: RunwayServer, tmp_path: Path) -> None:
    provider = make_provider(runway_server, tmp_path, max_data_uri_bytes=1000)
    image = Image.effect_noise((1280, 720), 80).convert("RGB")
    image.save(tmp_path / "noise.png")
    request = VideoRequest(prompt="static", seconds=2, size="1280x720", input_image=tmp_path / "noise.png")
    try:
        await run(provider, request, tmp_path / "o.mp4")
    finally:
        await provider.aclose()
    (create,) = runway_server.creates()
    assert create.json["promptImage"].startswith("runway://uploads/")
    assert runway_server.calls("POST", "/v1/uploads")[0].json == {"filename": "first_frame.jpg", "type": "ephemeral"}
    upload_id = create.json["promptImage"].rsplit("/", 1)[1]
    assert Image.open(io.BytesIO(runway_server.uploads[upload_id])).size == (1280, 720)


@pytest.mark.parametrize(
    ("request_kw", "error", "text"),
    [
        ({"seconds": 11}, InvalidRequest, "2 to 10"),
        ({"size": "1920x1080"}, InvalidRequest, "1280x720, 720x1280"),
        ({"model": "gen4_turbo"}, InvalidRequest, "animates an image"),
        ({"model": "veo3.1", "seconds": 5}, InvalidRequest, "4, 6 or 8"),
        ({"model": "gen3a_turbo"}, ModelUnavailable, "retired"),
    ],
)
def test_validation_before_anything_is_sent(tmp_path: Path, request_kw: dict, error: type, text: str) -> None:
    provider = RunwayVideoProvider(api_secret=SECRET, work_dir=tmp_path)
    fields = {"prompt": "x", "seconds": 5, "size": "1280x720", **request_kw}
    with pytest.raises(error, match=text):
        provider.validate(VideoRequest(**fields))


async def test_safety_failure_maps_to_content_policy(runway_server: RunwayServer, tmp_path: Path) -> None:
    runway_server.script = ["RUNNING", "FAILED"]
    runway_server.failure_code = "SAFETY.INPUT.TEXT"
    provider = make_provider(runway_server, tmp_path)
    try:
        remote = await provider.submit(VideoRequest(prompt="bad", seconds=5, size="1280x720"))
        with pytest.raises(ContentPolicyRejected):
            await wait_for_completion(provider, remote.id, policy=FAST)
    finally:
        await provider.aclose()


async def test_internal_failure_is_marked_retryable(runway_server: RunwayServer, tmp_path: Path) -> None:
    runway_server.script = ["FAILED"]
    runway_server.failure_code = "INTERNAL.BAD_OUTPUT.CODE01"
    provider = make_provider(runway_server, tmp_path)
    try:
        remote = await provider.submit(VideoRequest(prompt="x", seconds=5, size="1280x720"))
        with pytest.raises(GenerationFailed) as info:
            await wait_for_completion(provider, remote.id, policy=FAST)
    finally:
        await provider.aclose()
    assert info.value.retryable and info.value.remote_code == "INTERNAL.BAD_OUTPUT.CODE01"


async def test_rate_limited_create_is_retried_then_accepted(runway_server: RunwayServer, tmp_path: Path) -> None:
    runway_server.fail("POST", "/v1/text_to_video", 429, times=2)
    provider = make_provider(runway_server, tmp_path)
    try:
        remote = await provider.submit(VideoRequest(prompt="x", seconds=5, size="1280x720"))
    finally:
        await provider.aclose()
    assert remote.id in runway_server.tasks
    assert len(runway_server.creates()) == 3


async def test_ambiguous_create_500_is_never_repeated(runway_server: RunwayServer, tmp_path: Path) -> None:
    runway_server.fail("POST", "/v1/text_to_video", 500)
    provider = make_provider(runway_server, tmp_path)
    try:
        with pytest.raises(ProviderError) as info:
            await provider.submit(VideoRequest(prompt="x", seconds=5, size="1280x720"))
    finally:
        await provider.aclose()
    assert not isinstance(info.value, Unavailable)  # no fallback either: the task may exist
    assert len(runway_server.creates()) == 1


async def test_503_on_every_create_becomes_unavailable(runway_server: RunwayServer, tmp_path: Path) -> None:
    runway_server.fail("POST", "/v1/text_to_video", 503, times=5)
    provider = make_provider(runway_server, tmp_path)
    try:
        with pytest.raises(Unavailable):
            await provider.submit(VideoRequest(prompt="x", seconds=5, size="1280x720"))
    finally:
        await provider.aclose()


async def test_errors_from_the_api(runway_server: RunwayServer, tmp_path: Path) -> None:
    bad_key = make_provider(runway_server, tmp_path, api_secret="wrong")
    retired = make_provider(runway_server, tmp_path, retired_models=frozenset())
    try:
        with pytest.raises(NotConfigured):
            await bad_key.submit(VideoRequest(prompt="x", seconds=5, size="1280x720"))
        with pytest.raises(ModelUnavailable):
            await retired.submit(VideoRequest(prompt="x", seconds=5, size="1280x720", model="gen3a_turbo"))
        with pytest.raises(ProviderInvalidRequest):
            await retired.submit(VideoRequest(prompt="x", seconds=5, size="1920x1080", model="some_new_model"))
    finally:
        await bad_key.aclose()
        await retired.aclose()
    with pytest.raises(NotConfigured):
        await RunwayVideoProvider(api_secret=None, work_dir=tmp_path).submit(VideoRequest(prompt="x", seconds=5, size="1280x720"))


async def test_poll_5xx_is_retried_by_the_engine(runway_server: RunwayServer, tmp_path: Path) -> None:
    provider = make_provider(runway_server, tmp_path)
    try:
        remote = await provider.submit(VideoRequest(prompt="x", seconds=2, size="1280x720"))
        runway_server.fail("GET", "/v1/tasks/", 502, times=2)
        done = await wait_for_completion(provider, remote.id, policy=FAST)
    finally:
        await provider.aclose()
    assert done.status is RemoteStatus.COMPLETED


async def test_expired_output_url_is_refreshed(runway_server: RunwayServer, tmp_path: Path) -> None:
    runway_server.expire_first_output = True
    provider = make_provider(runway_server, tmp_path)
    try:
        await run(provider, VideoRequest(prompt="x", seconds=2, size="1280x720"), tmp_path / "o.mp4")
    finally:
        await provider.aclose()
    assert probe_video(tmp_path / "o.mp4").width == 128
    assert len(runway_server.calls("GET", "/outputs/")) == 2


async def test_output_gone_for_good_is_content_expired(runway_server: RunwayServer, tmp_path: Path) -> None:
    provider = make_provider(runway_server, tmp_path)
    try:
        remote = await provider.submit(VideoRequest(prompt="x", seconds=2, size="1280x720"))
        await wait_for_completion(provider, remote.id, policy=FAST)
        runway_server.fail("GET", "/outputs/", 403, times=5)
        with pytest.raises(ContentExpired):
            await provider.download(remote.id, tmp_path / "o.mp4")
    finally:
        await provider.aclose()


async def test_cancel_deletes_the_task(runway_server: RunwayServer, tmp_path: Path) -> None:
    runway_server.script = ["RUNNING"]
    provider = make_provider(runway_server, tmp_path)
    try:
        remote = await provider.submit(VideoRequest(prompt="x", seconds=2, size="1280x720"))
        await provider.cancel(remote.id)
        assert (await provider.poll(remote.id)).status is RemoteStatus.CANCELLED
    finally:
        await provider.aclose()
    assert runway_server.calls("DELETE", f"/v1/tasks/{remote.id}")


async def test_extend_animates_last_frame_and_concatenates(runway_server: RunwayServer, tmp_path: Path) -> None:
    provider = make_provider(runway_server, tmp_path)
    try:
        await run(provider, VideoRequest(prompt="x", seconds=2, size="1280x720"), tmp_path / "first.mp4")
        extend = VideoRequest(operation=Operation.EXTEND, prompt="and on", seconds=3, size="1280x720",
                              source_video=tmp_path / "first.mp4")  # fmt: skip
        await run(provider, extend, tmp_path / "long.mp4")
    finally:
        await provider.aclose()
    create = runway_server.creates()[-1]
    assert create.path == "/v1/image_to_video" and create.json["duration"] == 3
    assert prompt_image_of(create.json).size == (1280, 720)
    assert_video(tmp_path / "long.mp4", width=128, height=72, seconds=5)


async def test_remix_uses_source_image_or_first_frame(runway_server: RunwayServer, tmp_path: Path) -> None:
    provider = make_provider(runway_server, tmp_path)
    source = png(tmp_path / "src.png", (1280, 720), (10, 200, 10))
    try:
        await run(provider, VideoRequest(prompt="x", seconds=2, size="1280x720"), tmp_path / "first.mp4")
        with_image = VideoRequest(operation=Operation.REMIX, prompt="now at night", seconds=2, size="1280x720",
                                  source_video=tmp_path / "first.mp4", input_image=source)  # fmt: skip
        await run(provider, with_image, tmp_path / "r1.mp4")
        without = with_image.model_copy(update={"input_image": None})
        await run(provider, without, tmp_path / "r2.mp4")
    finally:
        await provider.aclose()
    first, second = runway_server.creates()[-2:]
    assert first.json["promptText"] == "now at night"
    green = prompt_image_of(first.json).convert("RGB").getpixel((640, 360))
    assert green[1] > 150 and green[0] < 60
    assert prompt_image_of(second.json).size == (1280, 720)
