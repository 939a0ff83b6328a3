"""Contract tests: the Flux provider (httpx) against the loopback BFL emulator."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from providers.base import ImageRequest
from providers.errors import ContentExpired, ContentPolicyRejected, InvalidRequest, NotConfigured, ProviderError
from providers.flux import FluxImageProvider
from tests.fakes.bfl_server import KEY, BflServer


def make(server: BflServer, **kw: object) -> FluxImageProvider:
    options: dict[str, object] = {"api_key": KEY, "base_url": server.base_url, "poll_seconds": 0.01, "retry_backoff": 0.01}
    options.update(kw)
    return FluxImageProvider(**options)  # type: ignore[arg-type]


async def test_submit_poll_and_download_a_real_png(bfl_server: BflServer, tmp_path: Path) -> None:
    bfl_server.script = ["Pending", "Pending", "Ready"]
    provider = make(bfl_server)
    request = ImageRequest(prompt="a lighthouse at dusk", size="1280x720", seed=3)
    assert provider.estimate_cost(request) == pytest.approx(0.03)
    try:
        result = await provider.generate(request, tmp_path / "f.png")
    finally:
        await provider.aclose()
    (submit,) = bfl_server.submits()
    assert submit.path == "/v1/flux-2-pro"
    assert submit.json == {"prompt": "a lighthouse at dusk", "width": 1280, "height": 720, "output_format": "png", "seed": 3}
    assert submit.headers["x-key"] == KEY
    assert len([r for r in bfl_server.requests if r.path.startswith("/v1/get_result")]) == 3
    with Image.open(tmp_path / "f.png") as image:
        assert image.format == "PNG" and image.size == (1280, 720)
    assert (result.width, result.height, result.model, result.cost) == (1280, 720, "flux-2-pro", pytest.approx(0.03))


@pytest.mark.parametrize("status", ["Request Moderated", "Content Moderated"])
async def test_moderated_is_a_content_policy_rejection(bfl_server: BflServer, tmp_path: Path, status: str) -> None:
    bfl_server.script = ["Pending", status]
    provider = make(bfl_server)
    try:
        with pytest.raises(ContentPolicyRejected):
            await provider.generate(ImageRequest(prompt="x", size="1024x1024"), tmp_path / "f.png")
    finally:
        await provider.aclose()


async def test_rate_limits_and_poll_errors_are_retried(bfl_server: BflServer, tmp_path: Path) -> None:
    bfl_server.fail("POST", "/v1/flux-2-pro", 429)
    bfl_server.fail("GET", "/v1/get_result", 502, times=2)
    provider = make(bfl_server)
    try:
        await provider.generate(ImageRequest(prompt="x", size="1024x1024"), tmp_path / "f.png")
    finally:
        await provider.aclose()
    assert len(bfl_server.submits()) == 2


async def test_ambiguous_submit_is_not_repeated(bfl_server: BflServer, tmp_path: Path) -> None:
    bfl_server.fail("POST", "/v1/flux-2-pro", 500)
    provider = make(bfl_server)
    try:
        with pytest.raises(ProviderError):
            await provider.generate(ImageRequest(prompt="x", size="1024x1024"), tmp_path / "f.png")
    finally:
        await provider.aclose()
    assert len(bfl_server.submits()) == 1


async def test_expired_sample_and_bad_key_and_sizes(bfl_server: BflServer, tmp_path: Path) -> None:
    bfl_server.expire_samples = True
    provider, wrong = make(bfl_server), make(bfl_server, api_key="nope")
    try:
        with pytest.raises(ContentExpired):
            await provider.generate(ImageRequest(prompt="x", size="1024x1024"), tmp_path / "f.png")
        with pytest.raises(NotConfigured):
            await wrong.generate(ImageRequest(prompt="x", size="1024x1024"), tmp_path / "f.png")
    finally:
        await provider.aclose()
        await wrong.aclose()
    with pytest.raises(InvalidRequest, match="divisible by 16"):
        provider.validate(ImageRequest(prompt="x", size="1000x700"))
    with pytest.raises(NotConfigured):
        await FluxImageProvider(api_key=None).generate(ImageRequest(prompt="x"), tmp_path / "g.png")
