"""The Google providers on their own, with the real google-genai client against the emulator:
sources made elsewhere, checks before anything is sent, refused credentials, settings, listing."""
from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.config import Settings
from bot.core.errors import ConfigError
from providers.base import Operation, VideoRequest
from providers.errors import InvalidRequest, NotConfigured
from providers.google_omni import GeminiOmniVideoProvider
from providers.google_veo import VeoVideoProvider
from providers.local_render import render_clip
from providers.polling import PollPolicy, wait_for_completion
from tests.fakes.google_server import KEY, LOCATION, PROJECT, TOKEN, GoogleServer, google_server  # noqa: F401
from tests.helpers import assert_video

FAST = PollPolicy(interval=0.01, min_interval=0.01, backoff_base=0.01, backoff_max=0.05)


@pytest.fixture
async def omni(google_server: GoogleServer, tmp_path: Path) -> AsyncIterator[GeminiOmniVideoProvider]:
    provider = GeminiOmniVideoProvider(api_key=KEY, work_dir=tmp_path / "omni", base_url=google_server.base_url,
                                       poll_seconds=0.01, policy=FAST)  # fmt: skip
    yield provider
    await provider.aclose()


@pytest.fixture
async def veo(google_server: GoogleServer, tmp_path: Path) -> AsyncIterator[VeoVideoProvider]:
    provider = VeoVideoProvider(project=PROJECT, location=LOCATION, work_dir=tmp_path / "veo", access_token=TOKEN,
                                base_url=google_server.base_url, poll_seconds=0.01, policy=FAST)  # fmt: skip
    yield provider
    await provider.aclose()


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """A clip another provider made (5 s, 128x72, last frames dark blue)."""
    path = tmp_path / "elsewhere.mp4"
    render_clip(path, prompt="made elsewhere", seconds=5, width=128, height=72, fps=8, seed=3)
    return path


async def _finish(provider: GeminiOmniVideoProvider | VeoVideoProvider, request: VideoRequest, dest: Path) -> None:
    provider.validate(request)
    job = await provider.submit(request)
    await wait_for_completion(provider, job.id, policy=FAST)
    await provider.download(job.id, dest)


async def test_omni_remix_of_a_clip_made_elsewhere_sends_the_video_inline(
    omni: GeminiOmniVideoProvider, google_server: GoogleServer, clip: Path, tmp_path: Path
) -> None:
    request = VideoRequest(operation=Operation.REMIX, prompt="now in autumn", seconds=5, size="1280x720",
                           source_video=clip, source_remote_id="runway-task-1")  # fmt: skip
    await _finish(omni, request, tmp_path / "out.mp4")
    (create,) = google_server.creates()
    body = create.json
    assert "previous_interaction_id" not in body and body["generation_config"]["video_config"] == {"task": "edit"}
    video = [c for step in body["input"] for c in step["content"] if c["type"] == "video"]
    assert base64.b64decode(video[0]["data"]) == clip.read_bytes() and video[0]["mime_type"] == "video/mp4"
    assert_video(tmp_path / "out.mp4", width=128, height=72, seconds=5)


async def test_veo_extends_a_clip_made_elsewhere_from_its_last_frame(
    veo: VeoVideoProvider, google_server: GoogleServer, clip: Path, tmp_path: Path
) -> None:
    request = VideoRequest(operation=Operation.EXTEND, prompt="and on", seconds=4, size="1280x720",
                           source_video=clip, source_remote_id="fal-request-1")  # fmt: skip
    await _finish(veo, request, tmp_path / "out.mp4")
    (create,) = google_server.creates()
    instance = create.json["instances"][0]
    assert "video" not in instance and create.json["parameters"]["durationSeconds"] == 4
    frame = Image.open(io.BytesIO(base64.b64decode(instance["image"]["bytesBase64Encoded"])))
    assert frame.size == (1280, 720)
    assert_video(tmp_path / "out.mp4", width=128, height=72, seconds=9)  # the source, then the new 4 s


async def test_checks_refuse_before_anything_is_sent(omni: GeminiOmniVideoProvider, veo: VeoVideoProvider,
                                                     google_server: GoogleServer, clip: Path) -> None:  # fmt: skip
    with pytest.raises(InvalidRequest, match=r"makes clips of 4, 6 or 8 seconds"):
        omni.validate(VideoRequest(prompt="x", seconds=5, size="1280x720"))
    with pytest.raises(InvalidRequest, match=r"makes videos of size 1280x720, 720x1280, 1920x1080, 1080x1920"):
        veo.validate(VideoRequest(prompt="x", seconds=8, size="1024x1024"))
    # Veo's own clip extends by 7 seconds with Veo's video input, or by a clip's length from its last frame.
    job = await veo.submit(VideoRequest(prompt="first", seconds=4, size="1280x720"))
    own = VideoRequest(operation=Operation.EXTEND, prompt="x", seconds=5, size="1280x720", source_video=clip, source_remote_id=job.id)
    with pytest.raises(InvalidRequest, match="extends its own clips by 4, 6, 7 or 8 seconds"):
        veo.validate(own)
    veo.validate(own.model_copy(update={"seconds": 7}))
    veo.validate(own.model_copy(update={"seconds": 4}))
    with pytest.raises(InvalidRequest, match="needs the source video"):
        omni.validate(VideoRequest(operation=Operation.EXTEND, prompt="x", seconds=4, size="1280x720", source_remote_id="unknown"))
    assert len(google_server.creates()) == 1


async def test_refused_credentials_are_not_configured(google_server: GoogleServer, tmp_path: Path) -> None:
    bad_key = GeminiOmniVideoProvider(api_key="wrong", work_dir=tmp_path / "o", base_url=google_server.base_url, policy=FAST)
    bad_token = VeoVideoProvider(project=PROJECT, location=LOCATION, work_dir=tmp_path / "v", access_token="expired",
                                 base_url=google_server.base_url, policy=FAST)  # fmt: skip
    try:
        with pytest.raises(NotConfigured, match="refused the credentials"):
            await bad_key.submit(VideoRequest(prompt="x", seconds=4, size="1280x720"))
        with pytest.raises(NotConfigured, match="refused the credentials"):
            await bad_token.submit(VideoRequest(prompt="x", seconds=4, size="1280x720"))
    finally:
        await bad_key.aclose()
        await bad_token.aclose()
    assert google_server.jobs == {} and len(google_server.creates()) == 2  # one each, not repeated


async def test_a_429_while_polling_is_waited_out(omni: GeminiOmniVideoProvider, google_server: GoogleServer, tmp_path: Path) -> None:
    google_server.fail("GET", "/v1/interactions/", 429, times=2, headers={"Retry-After": "0.01"})
    await _finish(omni, VideoRequest(prompt="busy", seconds=4, size="1280x720"), tmp_path / "out.mp4")
    assert len(google_server.creates()) == 1 and len(google_server.calls("GET", "/v1/interactions/")) >= 4
    assert_video(tmp_path / "out.mp4", width=128, height=72, seconds=4)


def test_a_bad_google_setting_names_the_variable(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_VEO_SIZES", "1280x720,999x999")
    with pytest.raises(ConfigError, match=r"GOOGLE_VEO_SIZES"):
        Settings().check()


def test_videobot_pipelines_lists_the_google_pipelines(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from bot.cli import main

    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    assert main(["pipelines"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0]: line for line in out.splitlines() if line and not line[0].isspace()}
    assert "(not configured)" not in listed["gemini-video"] and "(not configured)" not in listed["gemini-image"]
    assert "(not configured)" in listed["veo"]  # an API key alone cannot run Veo
    for chain in ("gemini-image+veo", "gemini-image+runway", "gpt-image+gemini-video"):
        assert chain in out


async def test_download_after_a_restart_reads_the_interaction_again(
    omni: GeminiOmniVideoProvider, google_server: GoogleServer, tmp_path: Path
) -> None:
    job = await omni.submit(VideoRequest(prompt="kept", seconds=4, size="1280x720"))
    await wait_for_completion(omni, job.id, policy=FAST)
    fresh = GeminiOmniVideoProvider(api_key=KEY, work_dir=tmp_path / "omni", base_url=google_server.base_url, policy=FAST)
    try:
        await fresh.download(job.id, tmp_path / "out.mp4")
    finally:
        await fresh.aclose()
    assert_video(tmp_path / "out.mp4", width=128, height=72, seconds=4)


class _WithLastFrame(VideoRequest):
    """A request carrying a last frame (the bot's commands have no option for one yet)."""

    last_frame: Path | None = None


async def test_veo_sends_a_last_frame_when_the_request_has_one(veo: VeoVideoProvider, google_server: GoogleServer, tmp_path: Path) -> None:
    first, last = tmp_path / "first.png", tmp_path / "last.png"
    Image.new("RGB", (640, 360), (250, 0, 0)).save(first)
    Image.new("RGB", (640, 360), (0, 0, 250)).save(last)
    request = _WithLastFrame(prompt="red to blue", seconds=4, size="1280x720", input_image=first, last_frame=last)
    await _finish(veo, request, tmp_path / "out.mp4")
    instance = google_server.creates()[0].json["instances"][0]
    pixels = [Image.open(io.BytesIO(base64.b64decode(instance[k]["bytesBase64Encoded"]))).getpixel((640, 360)) for k in ("image", "lastFrame")]
    assert pixels[0][0] > 200 and pixels[1][2] > 200  # red first, blue last, both at 1280x720
    assert_video(tmp_path / "out.mp4", width=128, height=72, seconds=4)
