"""Input images go through one door (providers.input_images): allowed formats only, the pixel
ceiling read from the header before anything is decoded, Pillow's bomb guard a clear refusal."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import psutil
import pytest
from PIL import Image

from bot.app import App
from bot.core.errors import user_message
from bot.core.models import GenerateRequest, Origin
from providers.errors import InvalidRequest
from providers.input_images import open_image
from providers.moderation import image_data_uri

MB = 1 << 20


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def bomb_png(side: int = 13_000) -> bytes:
    """A valid 1-bit PNG of side × side pixels in well under a megabyte, written row by row so
    the test itself never holds the picture (decoded as RGB it would be ~500 MB)."""
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte + a black row
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def test_a_huge_png_is_refused_from_its_header_without_growing_the_process() -> None:
    data = bomb_png()
    assert len(data) < 1 * MB
    before = rss()
    outcome: object
    try:
        outcome = open_image(data, name="huge.png")
    except InvalidRequest as exc:
        outcome = exc
    grown = rss() - before  # while a decoded picture, if any, is still held
    assert grown < 50 * MB, f"the process grew by {grown / MB:.0f} MB"
    assert isinstance(outcome, InvalidRequest)
    text = user_message(outcome)
    assert "'huge.png' is too large (13,000 × 13,000 pixels)" in text and "the limit is 40 megapixels" in text
    assert "Send a smaller picture" in text


async def test_the_core_refuses_it_before_anything_is_stored(app: App) -> None:
    before = rss()
    with pytest.raises(InvalidRequest, match="too large"):
        await app.service.submit(GenerateRequest(prompt="animate it", image_bytes=bomb_png(), image_name="huge.png"), Origin())
    assert rss() - before < 50 * MB
    bmp = encoded(Image.new("RGB", (64, 48)), "BMP")
    with pytest.raises(InvalidRequest, match="'photo.png' is not an image I can read; send a PNG, JPEG, WebP or GIF"):
        await app.service.submit(GenerateRequest(prompt="animate it", image_bytes=bmp, image_name="photo.png"), Origin())
    assert await app.store.list(limit=10) == [] and not any(app.media.root.iterdir())
    # A GIF is animated from its first frame.
    gif = encoded(Image.new("RGB", (64, 48), (250, 0, 0)), "GIF")
    job = await app.service.submit(GenerateRequest(prompt="animate it", image_bytes=gif, image_name="a.gif", seconds=1, size="128x72"), Origin())
    with Image.open(job.params.image_path or "") as stored:
        assert stored.format == "PNG" and stored.size == (64, 48)


async def test_the_pixel_ceiling_is_the_operators_setting(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.service.settings, "max_image_pixels", 1_000_000)
    picture = encoded(Image.new("RGB", (1200, 1000), (9, 9, 9)), "PNG")
    with pytest.raises(InvalidRequest, match=r"the limit is 1 megapixels"):
        await app.service.submit(GenerateRequest(prompt="animate it", image_bytes=picture, image_name="a.png"), Origin())


def test_pillows_own_bomb_guard_is_a_refusal_too() -> None:
    # Over twice Pillow's threshold, Image.open itself raises DecompressionBombError.
    with pytest.raises(InvalidRequest, match="too large") as refused:
        open_image(bomb_png(20_000), name="bigger.png", limit=10**12)
    assert isinstance(refused.value.__cause__, Image.DecompressionBombError)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "ICO", "PPM"])
def test_other_formats_are_refused_even_named_png(fmt: str) -> None:
    data = encoded(Image.new("RGB", (64, 48), (200, 10, 10)), fmt)
    with pytest.raises(InvalidRequest) as refused:
        open_image(data, name="photo.png")
    assert user_message(refused.value) == "'photo.png' is not an image I can read; send a PNG, JPEG, WebP or GIF."


def test_a_psd_is_refused() -> None:
    # A minimal Photoshop header (Pillow reads PSD; Pillow cannot write one).
    psd = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 48, 64, 8, 3) + struct.pack(">I", 0) * 3 + struct.pack(">H", 0) + bytes(64 * 48 * 3)
    with pytest.raises(InvalidRequest, match="is not an image I can read"):
        open_image(psd, name="layers.png")


def test_a_gif_gives_its_first_frame_and_jpeg_webp_pass() -> None:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    first = open_image(gif, name="moving.gif")
    assert first.mode == "RGB" and first.size == (40, 30)
    r, g, b = first.getpixel((20, 15))  # type: ignore[misc]
    assert r > 200 and b < 50, "the first frame (red), not the second (blue)"
    jpeg = open_image(encoded(Image.new("RGB", (320, 240), (10, 200, 10)), "JPEG", quality=90), name="a.jpg")
    assert jpeg.size == (320, 240) and jpeg.mode == "RGB"
    webp = open_image(encoded(Image.new("RGBA", (64, 64), (10, 10, 200, 128)), "WEBP"), name="a.webp")
    assert webp.size == (64, 64) and webp.mode == "RGB"


def test_moderation_reads_images_through_the_same_door(tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    huge.write_bytes(bomb_png())
    with pytest.raises(InvalidRequest, match="too large"):
        image_data_uri(huge)
    bmp = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(bmp, "BMP")
    with pytest.raises(InvalidRequest, match="is not an image I can read"):
        image_data_uri(bmp)
