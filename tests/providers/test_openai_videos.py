"""Contract tests: the real openai SDK (through our provider) against the loopback Videos emulator.

Every capability and every fault of the issue, asserting on the requests the server saw and on
the text a user would read (bot.core.errors.user_message).
"""
from __future__ import annotations

import io
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from PIL import Image

from bot.core.errors import user_message
from providers.base import Operation, RemoteJob, RemoteStatus, VideoRequest
from providers.errors import (
    ContentExpired,
    ContentPolicyRejected,
    GenerationFailed,
    InvalidRequest,
    ModelUnavailable,
    NotConfigured,
    ProviderInvalidRequest,
    ProviderTimeout,
    RateLimited,
    RemoteCancelled,
    TransientError,
    Unavailable,
)
from providers.media import probe_video
from providers.openai_common import SORA_DEPRECATION, install_warning_filter
from providers.openai_videos import OpenAIVideoProvider
from providers.polling import PollPolicy, retrying, wait_for_completion
from tests.fakes.openai_server import OpenAIEmulator
from tests.helpers import assert_video

pytestmark = pytest.mark.filterwarnings(f"ignore:{SORA_DEPRECATION}:DeprecationWarning")

FAST = PollPolicy(interval=0.01, min_interval=0.01, max_interval=0.5, timeout=10, max_failures=4, backoff_base=0.01, backoff_max=0.5)


@pytest.fixture
async def provider(openai_server: OpenAIEmulator) -> AsyncIterator[OpenAIVideoProvider]:
    p = OpenAIVideoProvider(
        api_key=openai_server.api_key, base_url=openai_server.base_url, prices={"sora-2": 0.10}, policy=FAST
    )
    try:
        yield p
    finally:
        await p.aclose()


def t2v(**kw: object) -> VideoRequest:
    fields: dict[str, object] = {"prompt": "a teal coupe crossing a desert at noon", "seconds": 4, "size": "1280x720"}
    fields.update(kw)
    return VideoRequest(**fields)  # type: ignore[arg-type]


async def make_video(provider: OpenAIVideoProvider, request: VideoRequest | None = None) -> tuple[str, list[RemoteJob]]:
    updates: list[RemoteJob] = []

    async def on_update(job: RemoteJob) -> None:
        updates.append(job)

    job = await provider.submit(request or t2v())
    await wait_for_completion(provider, job.id, on_update=on_update, policy=FAST)
    return job.id, updates


# --- capabilities ---------------------------------------------------------------------------


async def test_text_to_video_multipart_progress_poll_after_stream_and_thumbnail(
    provider: OpenAIVideoProvider, openai_server: OpenAIEmulator, tmp_path: Path
) -> None:
    openai_server.poll_after_ms = 40
    first = await provider.submit(t2v())
    assert first.status is RemoteStatus.QUEUED and first.poll_after == pytest.approx(0.04)
    assert first.note == "queued at the provider"
    updates: list[RemoteJob] = []

    async def on_update(job: RemoteJob) -> None:
        updates.append(job)

    done = await wait_for_completion(provider, first.id, on_update=on_update, policy=FAST)
    assert done.status is RemoteStatus.COMPLETED
    assert [u.progress for u in updates] == [33, 66, 100]
    assert all(u.poll_after == pytest.approx(0.04) for u in updates[:-1])

    (create,) = openai_server.creates
    assert create.method == "POST" and create.path == "/v1/videos"
    assert create.content_type.startswith("multipart/form-data; boundary=")
    assert create.fields == {"prompt": "a teal coupe crossing a desert at noon", "model": "sora-2", "seconds": "4", "size": "1280x720"}
    assert create.files == {}
    assert create.headers["authorization"] == f"Bearer {openai_server.api_key}"

    dest = tmp_path / "clip.mp4"
    await provider.download(first.id, dest)
    assert_video(dest, width=128, height=72, seconds=4)
    thumb = tmp_path / "thumb.jpg"
    assert await provider.download_thumbnail(first.id, thumb)
    assert Image.open(thumb).format == "JPEG"
    variants = [r.query.get("variant") for r in openai_server.calls("content")]
    assert variants == ["video", "thumbnail"]


async def test_image_to_video_uploads_the_image_cropped_to_the_size(
    provider: OpenAIVideoProvider, openai_server: OpenAIEmulator, tmp_path: Path
) -> None:
    square = tmp_path / "square.jpg"
    Image.new("RGB", (640, 640), (200, 40, 40)).save(square, "JPEG")
    await make_video(provider, t2v(input_image=square, size="720x1280"))
    (create,) = openai_server.creates
    part = create.files["input_reference"]
    assert part["content_type"] == "image/png"
    sent = Image.open(io.BytesIO(part["data"]))
    assert sent.size == (720, 1280) and sent.format == "PNG"
    assert create.fields["size"] == "720x1280"


async def test_remix_sends_json_to_the_source_video(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator) -> None:
    source, _ = await make_video(provider)
    remixed, _ = await make_video(provider, t2v(operation=Operation.REMIX, prompt="the same coupe in the rain", source_remote_id=source))
    remix = openai_server.creates[-1]
    assert remix.path == f"/v1/videos/{source}/remix"
    assert remix.content_type == "application/json"
    assert remix.fields == {"prompt": "the same coupe in the rain"}
    assert openai_server.videos[remixed].remixed_from_video_id == source


async def test_extend_by_id_goes_around_the_sdk_gap(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    # The gap itself: openai 3.54 refuses a video reference before sending anything.
    with pytest.raises(RuntimeError, match="Expected entry at `video`"):
        await provider.client.videos.extend(prompt="more", seconds="4", video={"id": "video_x"})
    assert openai_server.requests == []

    source, _ = await make_video(provider)
    extended, _ = await make_video(provider, t2v(operation=Operation.EXTEND, prompt="the coupe drives on", source_remote_id=source))
    ext = openai_server.creates[-1]
    assert ext.path == "/v1/videos/extensions" and ext.content_type == "application/json"
    assert ext.fields == {"prompt": "the coupe drives on", "seconds": "4", "video": {"id": source}}
    dest = tmp_path / "extended.mp4"
    await provider.download(extended, dest)
    assert_video(dest, width=128, height=72, seconds=8)  # the stitched whole, as the protocol returns it


async def test_extend_and_edit_upload_a_video_the_server_does_not_hold(
    provider: OpenAIVideoProvider, openai_server: OpenAIEmulator, tmp_path: Path
) -> None:
    from providers.local_render import render_clip

    local = tmp_path / "local.mp4"
    render_clip(local, prompt="made elsewhere", seconds=2, width=128, height=72, fps=6, seed=1)
    extended, _ = await make_video(provider, t2v(operation=Operation.EXTEND, prompt="on and on", source_video=local))
    edited, _ = await make_video(provider, t2v(operation=Operation.REMIX, prompt="at night", source_video=local))
    ext, edit = openai_server.creates[-2:]
    for rec, path in ((ext, "/v1/videos/extensions"), (edit, "/v1/videos/edits")):
        assert rec.path == path and rec.content_type.startswith("multipart/form-data")
        assert rec.files["video"]["content_type"] == "video/mp4"
        assert rec.files["video"]["data"] == local.read_bytes()
    assert ext.fields == {"prompt": "on and on", "seconds": "4"}
    assert edit.fields == {"prompt": "at night"}
    dest = tmp_path / "ext.mp4"
    await provider.download(extended, dest)
    assert_video(dest, width=128, height=72, seconds=6)
    await provider.download(edited, dest)
    assert_video(dest, width=128, height=72, seconds=2)


# --- validation -----------------------------------------------------------------------------


async def test_sora_models_are_checked_before_sending_and_others_pass_through(
    provider: OpenAIVideoProvider, openai_server: OpenAIEmulator
) -> None:
    with pytest.raises(InvalidRequest, match="4, 8 or 12 seconds"):
        provider.validate(t2v(seconds=5))
    with pytest.raises(InvalidRequest, match="720x1280, 1280x720, 1024x1792, 1792x1024"):
        provider.validate(t2v(size="1920x1080"))
    with pytest.raises(InvalidRequest, match="4, 8, 12, 16 or 20"):
        provider.validate(t2v(operation=Operation.EXTEND, seconds=6, source_remote_id="video_1"))
    # A gateway's model is not ours to judge: sent as asked, and the server's answer shown.
    gateway = t2v(model="minimax/h3", seconds=6, size="1920x1080")
    provider.validate(gateway)
    await provider.submit(gateway)
    assert openai_server.creates[-1].fields["model"] == "minimax/h3"
    openai_server.fail("create", 400, code="invalid_value", param="size", message="minimax/h3 does not make 1920x1080 at 6 s")
    with pytest.raises(ProviderInvalidRequest) as err:
        await provider.submit(gateway)
    assert user_message(err.value) == "The provider refused the request: minimax/h3 does not make 1920x1080 at 6 s"


# --- faults ---------------------------------------------------------------------------------


async def test_bad_key_is_not_configured(openai_server: OpenAIEmulator) -> None:
    p = OpenAIVideoProvider(api_key="sk-wrong", base_url=openai_server.base_url)
    try:
        with pytest.raises(NotConfigured) as err:
            await p.submit(t2v())
    finally:
        await p.aclose()
    assert user_message(err.value).startswith("This pipeline is not configured")
    assert "HTTP 401" in (err.value.detail or "") and "sk-wrong" not in (err.value.detail or "")
    no_key = OpenAIVideoProvider(api_key=None)
    with pytest.raises(NotConfigured):
        await no_key.poll("video_1")


async def test_429_on_poll_honours_retry_after_ms_then_completes(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator) -> None:
    job = await provider.submit(t2v())
    openai_server.fail("retrieve", 429, code="rate_limit_exceeded", message="slow down", headers={"retry-after-ms": "70"})
    with pytest.raises(RateLimited) as err:
        await provider.poll(job.id)
    assert err.value.retry_after == pytest.approx(0.07)
    openai_server.fail("retrieve", 429, headers={"retry-after": "0"}, times=2)
    done = await wait_for_completion(provider, job.id, policy=FAST)
    assert done.status is RemoteStatus.COMPLETED
    assert len(openai_server.creates) == 1


async def test_500_after_an_accepted_create_is_not_resent(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator) -> None:
    openai_server.accept_then_fail("create", 500)
    with pytest.raises(TransientError) as err:
        await provider.submit(t2v())
    assert len(openai_server.creates) == 1 and len(openai_server.videos) == 1  # the server has (and bills) it
    assert "HTTP 500" in (err.value.detail or "")
    assert user_message(err.value).startswith("The video service is unavailable")


async def test_dropped_connections(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    openai_server.drop("create", after_accept=True)
    with pytest.raises(TransientError):
        await provider.submit(t2v())
    assert len(openai_server.creates) == 1

    job = await provider.submit(t2v())
    openai_server.drop("retrieve", times=2)
    assert (await wait_for_completion(provider, job.id, policy=FAST)).status is RemoteStatus.COMPLETED

    # Mid-download: the engine's retry writes the file again from the start.
    openai_server.partial("content")
    dest = tmp_path / "clip.mp4"
    with pytest.raises(TransientError):
        await provider.download(job.id, dest)
    openai_server.partial("content")
    await retrying(lambda: provider.download(job.id, dest), policy=FAST, what="download")
    probe_video(dest)
    assert_video(dest, width=128, height=72, seconds=4)
    assert len(openai_server.calls("content")) == 3


async def test_5xx_on_every_poll_ends_unavailable(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator) -> None:
    job = await provider.submit(t2v())
    openai_server.fail("retrieve", 503, times=10)
    with pytest.raises(Unavailable) as err:
        await wait_for_completion(provider, job.id, policy=FAST)
    assert user_message(err.value) == "The video service is unavailable at sora. Try again later."


async def test_failed_job_is_generation_failed_with_code(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator) -> None:
    openai_server.fail_jobs = ("video_generation_failed", "The render nodes ran out of memory.")
    job = await provider.submit(t2v())
    with pytest.raises(GenerationFailed) as err:
        await wait_for_completion(provider, job.id, policy=FAST)
    assert err.value.remote_code == "video_generation_failed"
    assert user_message(err.value) == "The provider could not make this video [video_generation_failed]: The render nodes ran out of memory."

    openai_server.fail_jobs = ("moderation_blocked", "The output was flagged.")
    job = await provider.submit(t2v())
    with pytest.raises(ContentPolicyRejected, match="The output was flagged."):
        await wait_for_completion(provider, job.id, policy=FAST)


async def test_policy_rejection_on_create(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator) -> None:
    with pytest.raises(ContentPolicyRejected) as err:
        await provider.submit(t2v(prompt="something forbidden"))
    assert user_message(err.value) == (
        "Rejected by the provider's content policy (Your request was blocked by our moderation system.). "
        "Rephrase the prompt and try again."
    )


@pytest.mark.parametrize("model", ["sora-1", "acme/nonexistent"])
async def test_unknown_or_retired_model(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator, model: str) -> None:
    with pytest.raises(ModelUnavailable) as err:
        await provider.submit(t2v(model=model))
    assert user_message(err.value) == "That model is unavailable at sora. Pick another model or pipeline."
    assert model in (err.value.detail or "")


async def test_content_gone_after_expiry(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    job_id, _ = await make_video(provider)
    openai_server.expire(job_id)
    with pytest.raises(ContentExpired) as err:
        await provider.download(job_id, tmp_path / "late.mp4")
    assert "expired" in user_message(err.value) and "Generate it again" in user_message(err.value)
    assert not await provider.download_thumbnail(job_id, tmp_path / "late.jpg")  # the runner uses the first frame


async def test_timeout_cancels_with_delete(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator) -> None:
    openai_server.hold = True
    job = await provider.submit(t2v())
    policy = PollPolicy(interval=0.01, min_interval=0.01, timeout=0.2)
    with pytest.raises(ProviderTimeout) as err:
        await wait_for_completion(provider, job.id, policy=policy)
    assert "did not finish" in user_message(err.value)
    (delete,) = openai_server.calls("delete")
    assert delete.method == "DELETE" and delete.path == f"/v1/videos/{job.id}"
    await provider.cancel(job.id)  # already gone: quiet


async def test_a_job_deleted_on_the_server_reads_as_cancelled(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator) -> None:
    openai_server.hold = True
    job = await provider.submit(t2v())
    await provider.poll(job.id)
    assert await provider.delete_remote(job.id)
    with pytest.raises(RemoteCancelled) as err:
        await wait_for_completion(provider, job.id, policy=FAST)
    assert user_message(err.value) == "The provider cancelled this job. Try again."


async def test_admin_list_follows_the_cursor_show_and_delete(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator) -> None:
    ids = [(await provider.submit(t2v(prompt=f"clip {i}"))).id for i in range(5)]
    listed = await provider.list_remote(limit=5, page_size=2)
    assert [v.id for v in listed] == list(reversed(ids))
    afters = [r.query.get("after") for r in openai_server.calls("list")]
    assert afters == [None, ids[3], ids[1]]
    assert (await provider.show_remote(ids[0])).prompt == "clip 0"
    assert await provider.delete_remote(ids[0])
    with pytest.raises(Exception) as err:
        await provider.show_remote(ids[0])
    assert "404" in (getattr(err.value, "detail", "") or "")


async def test_progress_by_time_and_an_unreadable_input_image(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    openai_server.advance, openai_server.seconds_to_complete = "time", 0.3
    job_id, updates = await make_video(provider)
    assert updates[-1].status is RemoteStatus.COMPLETED and len(updates) > 2
    assert [u.progress for u in updates] == sorted(u.progress for u in updates)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(InvalidRequest, match="is not an image") as err:
        await provider.submit(t2v(input_image=broken))
    assert err.value.__cause__ is not err.value
    assert len(openai_server.creates) == 1  # nothing sent for the broken one


def test_only_the_sora_deprecation_warning_is_filtered() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        install_warning_filter()
        warnings.warn(SORA_DEPRECATION, DeprecationWarning)
        warnings.warn(SORA_DEPRECATION, UserWarning)
        warnings.warn("Another API is deprecated.", DeprecationWarning)
    assert [(str(w.message), w.category) for w in caught] == [
        (SORA_DEPRECATION, UserWarning),
        ("Another API is deprecated.", DeprecationWarning),
    ]


async def test_videos_calls_emit_no_deprecation_warning(provider: OpenAIVideoProvider, openai_server: OpenAIEmulator) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        install_warning_filter()
        await provider.poll((await provider.submit(t2v())).id)
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert isinstance(provider.client, openai.AsyncOpenAI) and provider.client.max_retries == 0
