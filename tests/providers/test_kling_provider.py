"""The Kling provider on its own against the loopback emulator: the JWT (refused when bad or
expired, with Kling's error body; renewed when Kling says it expired), the end frame
(`image_tail`), Kling's error codes mapped to the taxonomy, and checks before anything is sent."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
from PIL import Image

from providers.base import RemoteStatus, VideoRequest
from providers.errors import (
    ContentPolicyRejected,
    InvalidRequest,
    NotConfigured,
    ProviderInvalidRequest,
    RateLimited,
    Unavailable,
)
from providers.kling import KlingVideoProvider
from providers.polling import PollPolicy
from tests.fakes.kling_server import ACCESS_KEY, SECRET_KEY, KlingServer, sent_image
from tests.helpers import assert_video

FAST = PollPolicy(interval=0.01, min_interval=0.01, backoff_base=0.01, backoff_max=0.02)


class EndFrameRequest(VideoRequest):
    """A request with an end frame (the core has no end-frame option yet; the provider reads `end_image`)."""

    end_image: Path | None = None


@pytest.fixture
async def kling(kling_server: KlingServer, tmp_path: Path) -> AsyncIterator[KlingVideoProvider]:
    provider = KlingVideoProvider(access_key=ACCESS_KEY, secret_key=SECRET_KEY, work_dir=tmp_path / "kling",
                                  base_url=kling_server.base_url, poll_seconds=0.01, policy=FAST)  # fmt: skip
    yield provider
    await provider.aclose()


def token(**claims: object) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ACCESS_KEY, "exp": now + 1800, "nbf": now - 5, **claims}, SECRET_KEY, algorithm="HS256")


# --- the token ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "code", "message"),
    [
        (None, 1001, "Authorization is empty"),
        ("Bearer not-a-jwt", 1002, "Authorization is invalid"),
        (f"Bearer {token(iss='someone-else')}", 1002, "Authorization is invalid"),
        (f"Bearer {token(exp=int(time.time()) - 60)}", 1004, "Authorization has expired"),
        (f"Bearer {token(nbf=int(time.time()) + 600)}", 1003, "Authorization is not yet valid"),
    ],
)
async def test_the_emulator_refuses_a_bad_token_as_kling_does(kling_server: KlingServer, header: str | None, code: int, message: str) -> None:
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{kling_server.base_url}/v1/videos/text2video/1", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert (body["code"], body["message"]) == (code, message) and body["request_id"]


async def test_an_expired_token_is_renewed_and_the_read_repeated(kling: KlingVideoProvider, kling_server: KlingServer) -> None:
    job = await kling.submit(VideoRequest(prompt="a kite", seconds=5, size="1280x720", client_ref="job-1"))
    stale = token(exp=int(time.time()) - 1)
    kling._token._token, kling._token._expires = stale, time.time() + 3600  # type: ignore[union-attr]
    polled = await kling.poll(job.id)
    assert polled.status is RemoteStatus.IN_PROGRESS
    first, second = kling_server.requests[-2:]
    assert first.headers["Authorization"] == f"Bearer {stale}" and first.claims is None
    assert second.claims is not None and second.claims["exp"] > time.time() + 1700


async def test_a_wrong_secret_is_not_configured(kling_server: KlingServer, tmp_path: Path) -> None:
    provider = KlingVideoProvider(access_key=ACCESS_KEY, secret_key="x" * 32, work_dir=tmp_path, base_url=kling_server.base_url, policy=FAST)
    with pytest.raises(NotConfigured):
        await provider.submit(VideoRequest(prompt="a kite", seconds=5, size="1280x720", client_ref="job-1"))
    await provider.aclose()
    assert kling_server.tasks == {}


# --- the end frame ----------------------------------------------------------------------------


async def test_first_and_end_frames_go_as_image_and_image_tail(kling_server: KlingServer, tmp_path: Path) -> None:
    provider = KlingVideoProvider(access_key=ACCESS_KEY, secret_key=SECRET_KEY, work_dir=tmp_path / "k", mode="pro",
                                  base_url=kling_server.base_url, poll_seconds=0.01, policy=FAST)  # fmt: skip
    start, end = tmp_path / "start.png", tmp_path / "end.png"
    Image.new("RGB", (2000, 1200), (20, 30, 220)).save(start)
    Image.new("RGB", (1920, 1080), (240, 220, 20)).save(end)
    request = EndFrameRequest(prompt="day turns to night", seconds=5, size="1920x1080", input_image=start, end_image=end, client_ref="job-e")
    provider.validate(request)
    job = await provider.submit(request)
    (create,) = kling_server.creates()
    assert create.path == "/v1/videos/image2video" and create.json["mode"] == "pro"
    first, last = sent_image(create, "image"), sent_image(create, "image_tail")
    assert first.size == last.size == (1920, 1080)
    assert first.getpixel((960, 540))[2] > 200 and last.getpixel((960, 540))[0] > 220
    while (await provider.poll(job.id)).status is not RemoteStatus.COMPLETED:
        pass
    await provider.download(job.id, tmp_path / "out.mp4")
    await provider.aclose()
    assert_video(tmp_path / "out.mp4", width=192, height=108, seconds=5)


def test_an_end_frame_needs_a_model_and_mode_that_take_one(kling: KlingVideoProvider, tmp_path: Path) -> None:
    request = EndFrameRequest(prompt="x", seconds=5, size="1280x720", end_image=tmp_path / "end.png")
    with pytest.raises(InvalidRequest, match="end frame only in pro mode"):
        kling.validate(request)
    with pytest.raises(InvalidRequest, match="no model 'kling-v9'.*kling-v2-5-turbo"):
        kling.validate(VideoRequest(prompt="x", seconds=5, size="1280x720", model="kling-v9"))


# --- Kling's error codes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (429, 1101, Unavailable),  # the account is in arrears: not a rate limit
        (429, 1102, Unavailable),  # the resource pack ran out
        (403, 1103, NotConfigured),
        (400, 1201, ProviderInvalidRequest),
        (400, 1301, ContentPolicyRejected),
    ],
)
async def test_create_errors_map_to_the_taxonomy(
    kling: KlingVideoProvider, kling_server: KlingServer, status: int, code: int, error: type[Exception]
) -> None:
    kling_server.fail("POST", "/v1/videos/text2video", status, code)
    with pytest.raises(error) as info:
        await kling.submit(VideoRequest(prompt="a kite", seconds=5, size="1280x720", client_ref="job-1"))
    assert not isinstance(info.value, RateLimited)
    assert len(kling_server.creates()) == 1 and kling_server.tasks == {}


async def test_a_429_1303_is_a_rate_limit_the_runner_waits_out(kling: KlingVideoProvider, kling_server: KlingServer) -> None:
    kling_server.fail("POST", "/v1/videos/text2video", 429, 1303, times=3, headers={"Retry-After": "7"})
    with pytest.raises(RateLimited) as info:
        await kling.submit(VideoRequest(prompt="a kite", seconds=5, size="1280x720", client_ref="job-1"))
    assert info.value.retry_after == 7 and kling_server.tasks == {} and len(kling_server.creates()) == 3


async def test_a_429_on_a_read_is_retried(kling: KlingVideoProvider, kling_server: KlingServer) -> None:
    job = await kling.submit(VideoRequest(prompt="a kite", seconds=5, size="1280x720", client_ref="job-1"))
    kling_server.fail("GET", "/v1/videos/text2video/", 429, 1302, times=2, headers={"Retry-After": "0.01"})
    assert (await kling.poll(job.id)).status is RemoteStatus.IN_PROGRESS
    assert len(kling_server.calls("GET", "/v1/videos/text2video/")) == 3


async def test_find_remote_without_a_task_proves_absence_after_the_grace(kling: KlingVideoProvider, kling_server: KlingServer) -> None:
    kling.ABSENCE_GRACE_SECONDS = 0.2
    request = VideoRequest(prompt="a kite", seconds=5, size="1280x720", client_ref="job-never")
    assert kling.proves_absence
    sent_at = time.time()
    assert await kling.find_remote("job-never", request=request, sent_at=sent_at) is None
    lookups = kling_server.calls("GET", "/v1/videos/")
    assert {c.path.rsplit("/", 1)[1] for c in lookups} == {"text2video", "image2video", "video-extend"}
    # The miss that counts was seen only once a create sent at `sent_at` would have arrived.
    assert lookups[-1].at >= sent_at + 0.2


async def test_a_create_kling_refuses_as_a_duplicate_id_adopts_the_existing_task(kling: KlingVideoProvider, kling_server: KlingServer) -> None:
    first = await kling.submit(VideoRequest(prompt="a kite", seconds=5, size="1280x720", client_ref="job-dup"))
    again = await kling.submit(VideoRequest(prompt="a kite", seconds=5, size="1280x720", client_ref="job-dup"))
    assert again.id == first.id and len(kling_server.tasks) == 1 and len(kling_server.creates()) == 2
    with pytest.raises(ProviderInvalidRequest):
        await kling.submit(VideoRequest(prompt="a kite", seconds=7, size="1280x720", client_ref="job-other"))
