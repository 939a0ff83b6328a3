"""GPT image provider: the real openai SDK against the emulator's /v1/images/generations, and
image jobs through the core and the CLI."""
from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.app import open_app
from bot.config import Settings, load_settings
from bot.core.errors import user_message
from bot.core.models import GenerateRequest, JobKind, JobStatus, Origin
from providers.base import ImageRequest, VideoRequest
from providers.errors import ContentPolicyRejected, InvalidRequest, ModelUnavailable, NotConfigured, RateLimited
from providers.openai_common import SORA_DEPRECATION
from providers.openai_images import OpenAIImageProvider
from providers.openai_videos import OpenAIVideoProvider
from tests.fakes.openai_server import OpenAIEmulator
from tests.helpers import assert_video

pytestmark = pytest.mark.filterwarnings(f"ignore:{SORA_DEPRECATION}:DeprecationWarning")

PRICES = {"gpt-image-2": {"text": 5.0, "image": 8.0, "output": 30.0}, "gpt-image-1-mini": {"text": 2.0, "image": 2.5, "output": 8.0}}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def images(openai_server: OpenAIEmulator) -> AsyncIterator[OpenAIImageProvider]:
    p = OpenAIImageProvider(
        api_key=openai_server.api_key, base_url=openai_server.base_url, token_prices=PRICES,
        retired_models=frozenset({"dall-e-3", "gpt-image-1"}),
    )  # fmt: skip
    try:
        yield p
    finally:
        await p.aclose()


async def test_generate_decodes_b64_to_png_with_cost_from_usage(images: OpenAIImageProvider, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    dest = tmp_path / "out.png"
    result = await images.generate(ImageRequest(prompt="a red kite over dunes", size="1536x1024", quality="low"), dest)
    (call,) = openai_server.calls("image")
    assert call.path == "/v1/images/generations" and call.content_type == "application/json"
    assert call.fields == {"prompt": "a red kite over dunes", "model": "gpt-image-2", "size": "1536x1024", "quality": "low", "n": 1, "output_format": "png"}
    assert "response_format" not in call.fields  # GPT image models refuse it
    with Image.open(dest) as png:
        assert png.format == "PNG" and png.size == (1536, 1024)
    assert (result.width, result.height, result.model) == (1536, 1024, "gpt-image-2")
    output_tokens = int(272 * 1536 * 1024 / (1024 * 1024))
    assert result.cost == pytest.approx((5 * 5.0 + output_tokens * 30.0) / 1e6)
    assert images.estimate_cost(ImageRequest(prompt="x", size="1536x1024", quality="low")) == pytest.approx(round(output_tokens * 30.0 / 1e6, 4), abs=1e-4)


@pytest.mark.parametrize(
    ("model", "size", "ok"),
    [
        ("gpt-image-2", "1024x1024", True),
        ("gpt-image-2", "auto", True),
        ("gpt-image-2", "1280x720", True),
        ("gpt-image-2", "3840x2160", True),
        ("gpt-image-2.5-flare", "2160x3840", True),
        ("gpt-image-2", "1000x1000", False),  # not divisible by 16
        ("gpt-image-2", "1600x400", False),  # 4:1
        ("gpt-image-2", "4096x2048", False),  # over 3840x2160
        ("gpt-image-1-mini", "1280x720", False),  # fixed sizes only
        ("gpt-image-1-mini", "1024x1536", True),
    ],
)
def test_size_rules(images: OpenAIImageProvider, model: str, size: str, ok: bool) -> None:
    request = ImageRequest(prompt="x", size=size, model=model)
    if ok:
        images.validate(request)
    else:
        with pytest.raises(InvalidRequest, match="makes images of size"):
            images.validate(request)


def test_quality_and_retired_models_checked_before_sending(images: OpenAIImageProvider, openai_server: OpenAIEmulator) -> None:
    with pytest.raises(InvalidRequest, match="low, medium, high, auto"):
        images.validate(ImageRequest(prompt="x", quality="ultra"))
    for model in ("dall-e-3", "gpt-image-1"):
        with pytest.raises(ModelUnavailable, match="retired"):
            images.validate(ImageRequest(prompt="x", model=model))
    assert openai_server.requests == []


async def test_server_side_refusals(openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    # No local retired list: the server's 404 model_not_found says it.
    p = OpenAIImageProvider(api_key=openai_server.api_key, base_url=openai_server.base_url)
    try:
        with pytest.raises(ModelUnavailable):
            await p.generate(ImageRequest(prompt="x", model="gpt-image-1"), tmp_path / "a.png")
        with pytest.raises(ContentPolicyRejected) as policy:
            await p.generate(ImageRequest(prompt="a forbidden thing"), tmp_path / "a.png")
        assert "safety system" in user_message(policy.value)
        openai_server.fail("image", 429, code="rate_limit_exceeded", headers={"retry-after-ms": "1500"})
        with pytest.raises(RateLimited) as limited:
            await p.generate(ImageRequest(prompt="x"), tmp_path / "a.png")
        assert limited.value.retry_after == pytest.approx(1.5)
        assert len(openai_server.calls("image")) == 3  # never retried: every call bills
    finally:
        await p.aclose()
    bad = OpenAIImageProvider(api_key="sk-nope", base_url=openai_server.base_url)
    try:
        with pytest.raises(NotConfigured):
            await bad.generate(ImageRequest(prompt="x"), tmp_path / "a.png")
    finally:
        await bad.aclose()
    assert not (tmp_path / "a.png").exists()


def test_snap_size_for_the_video_first_frame() -> None:
    p = OpenAIImageProvider(api_key="k", model="gpt-image-1-mini", snap_size=True)
    p.validate(ImageRequest(prompt="x", size="1280x720"))
    assert p._size(ImageRequest(prompt="x", size="1280x720")) == "1536x1024"
    assert p._size(ImageRequest(prompt="x", size="720x1280")) == "1024x1536"


@pytest.fixture
def openai_settings(settings: Settings, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    return load_settings()


async def test_image_job_through_the_core(openai_settings: Settings, openai_server: OpenAIEmulator) -> None:
    app = await open_app(openai_settings)
    app.runner.deliverers["cli"] = lambda job: asyncio.sleep(0)  # type: ignore[assignment,return-value]
    await app.runner.start()
    try:
        job = await app.service.submit(
            GenerateRequest(prompt="a lantern", kind=JobKind.IMAGE, pipeline="gpt-image", size="1024x1536"), Origin(platform="cli")
        )
        assert job.cost_estimate is not None and job.cost_estimate > 0
        done = await asyncio.wait_for(app.runner.wait(job.id), 20)
    finally:
        await app.close()
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.provider == "gpt-image" and done.model == "gpt-image-2" and done.cost_actual and done.cost_actual > 0
    with Image.open(done.output_path) as png:  # type: ignore[arg-type]
        assert png.format == "PNG" and png.size == (1024, 1536)


async def _videobot(tmp_path: Path, server: OpenAIEmulator, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """The CLI as a real process (the emulator keeps serving on this loop meanwhile)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOBOT_", "OPENAI_", "RUNWAYML_", "BFL_", "SLACK_", "DISCORD_"))}
    env.update({
        "VIDEOBOT_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT),
        "OPENAI_API_KEY": server.api_key, "OPENAI_BASE_URL": server.base_url,
    })  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=tmp_path, env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_image_and_remote_admin(openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    out = tmp_path / "pics" / "lantern.png"
    code, stdout, stderr = await _videobot(tmp_path, openai_server, "image", "a paper lantern", "--pipeline", "gpt-image", "--size", "1024x1024", "--out", str(out))
    assert code == 0, stderr
    assert any(line.startswith("image: ") for line in stdout.splitlines())
    with Image.open(out) as png:
        assert png.size == (1024, 1024)

    p = OpenAIVideoProvider(api_key=openai_server.api_key, base_url=openai_server.base_url)
    try:
        ids = [(await p.submit(VideoRequest(prompt=f"clip {i}", seconds=4, size="1280x720"))).id for i in range(2)]
    finally:
        await p.aclose()
    code, stdout, stderr = await _videobot(tmp_path, openai_server, "remote", "list", "--limit", "5")
    assert code == 0, stderr
    assert [line.split()[0] for line in stdout.splitlines()] == list(reversed(ids))
    code, stdout, _ = await _videobot(tmp_path, openai_server, "remote", "show", ids[0])
    assert code == 0 and "prompt:  clip 0" in stdout
    code, stdout, _ = await _videobot(tmp_path, openai_server, "remote", "delete", ids[0])
    assert code == 0 and stdout.strip() == f"{ids[0]}: deleted"
    code, _, stderr = await _videobot(tmp_path, openai_server, "remote", "show", ids[0])
    assert code == 1 and stderr.startswith("videobot: ") and "Traceback" not in stderr
    assert openai_server.videos[ids[0]].deleted and not openai_server.videos[ids[1]].deleted


async def test_console_image_and_video_on_openai_pipelines(openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    script = "/image a paper lantern --pipeline gpt-image --size 1024x1536\n/video a paper boat --pipeline sora --seconds 4\n"
    code, stdout, stderr = await _videobot(tmp_path, openai_server, "run", stdin=script)
    assert code == 0, stderr
    images = [line.split("image: ", 1)[1] for line in stdout.splitlines() if "] image: " in line]
    videos = [line.split("video: ", 1)[1] for line in stdout.splitlines() if "] video: " in line]
    assert len(images) == 1 and len(videos) == 1, stdout
    with Image.open(images[0]) as png:
        assert png.size == (1024, 1536)
    assert_video(videos[0], width=128, height=72, seconds=4)
    assert len(openai_server.calls("image")) == 1 and len(openai_server.creates) == 1
