"""The one way an image from outside becomes pixels: chat attachments, Slack files, CLI paths,
and every provider that reads the stored input again.

A small file can describe a huge picture (a 0.7 MB PNG of 13,000 × 13,000 pixels decodes to
gigabytes), and Pillow opens dozens of formats with parsers of uneven quality. So: only PNG,
JPEG, WebP and GIF (its first frame) are opened; the size is read from the header and refused
above the operator's pixel limit before a single row is decoded; and decodes run at most one
per core at a time, however many requests arrive together.

Blocking: call `open_image` through a thread (`decode` does that for async code).
"""
from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageOps, UnidentifiedImageError

from providers.errors import InvalidRequest

#: What Pillow may identify an input as; anything else is refused unread.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
#: The default ceiling on width × height (VIDEOBOT_MAX_IMAGE_PIXELS): 40 MP is above any
#: camera a user sends from and far below what would hurt the process (40 MP RGB is 120 MB).
DEFAULT_MAX_PIXELS = 40_000_000
KINDS = "PNG, JPEG, WebP or GIF"
_EXIF_ORIENTATION = 0x0112

_max_pixels = DEFAULT_MAX_PIXELS
#: One decode per core at once, for every caller (threads of any executor).
_decoders = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


def configure(*, max_pixels: int) -> None:
    """The operator's pixel ceiling for this process (the app applies its settings at start).

    Pillow's own bomb threshold follows, so an image the operator allows is not warned about."""
    global _max_pixels
    _max_pixels = max_pixels
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def max_pixels() -> int:
    return _max_pixels


class Header(NamedTuple):
    format: str
    width: int
    height: int
    #: EXIF says the picture is stored turned (it is shown after exif_transpose).
    turned: bool


def probe(data: bytes, *, name: str = "image", limit: int | None = None) -> Header:
    """The format and size from the header alone, refused when not allowed; nothing decoded."""
    limit = _max_pixels if limit is None else limit
    with _refusals(name, data, limit):
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
            if width * height > limit:
                raise InvalidRequest(_too_many(name, width, height, limit))
            # Only EXIF already read with the header (a PNG's getexif() would decode the pixels).
            turned = "exif" in image.info and image.getexif().get(_EXIF_ORIENTATION, 1) != 1
            image.verify()  # structure and checksums, nothing decoded
            return Header(str(image.format), width, height, turned)


def open_image(data: bytes, *, name: str = "image", limit: int | None = None) -> Image.Image:
    """`data` as an upright RGB image, or InvalidRequest saying what to send instead.

    `limit`: the most pixels allowed (the configured ceiling unless given)."""
    limit = _max_pixels if limit is None else limit
    probe(data, name=name, limit=limit)
    with _refusals(name, data, limit), _decoders:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        image.seek(0)  # an animation: its first frame
        image.load()
        return ImageOps.exif_transpose(image).convert("RGB")


@contextmanager
def _refusals(name: str, data: bytes, limit: int) -> Iterator[None]:
    """Pillow's failures as the user's InvalidRequest."""
    try:
        yield
    except InvalidRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own net (the error above twice its threshold; the warning where a caller
        # made warnings errors) caught a picture before the header check could.
        raise InvalidRequest(_too_many(name, 0, 0, limit)) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidRequest(f"'{name}' is not an image I can read; send a {KINDS}.") from exc


def readable_file(path: Path) -> Path:
    """`path` if it names a file this process can read, else InvalidRequest saying what is wrong
    with it (a folder, nothing there, no permission) in one line."""
    try:
        with path.open("rb") as f:
            f.read(1)
    except IsADirectoryError:
        raise InvalidRequest(f"'{path}' is a folder, not an image. Give the path of a {KINDS} file.") from None
    except FileNotFoundError:
        raise InvalidRequest(f"There is no file '{path}'. Check the path.") from None
    except PermissionError:
        raise InvalidRequest(f"Cannot read '{path}': permission denied. Check the file's permissions.") from None
    except OSError as exc:
        raise InvalidRequest(f"Cannot read '{path}' ({exc.strerror or exc}). Check the path.") from None
    return path


async def decode(data: bytes, *, name: str = "image", limit: int | None = None) -> Image.Image:
    """`open_image` off the event loop."""
    return await asyncio.to_thread(open_image, data, name=name, limit=limit)


def _too_many(name: str, width: int, height: int, limit: int) -> str:
    size = f" ({width:,} × {height:,} pixels)" if width and height else ""
    return (
        f"'{name}' is too large{size}; the limit is {limit / 1e6:g} megapixels. "
        "Send a smaller picture (resize it, or take a screenshot of it)."
    )
