"""Media work with PyAV and Pillow: probe, thumbnails, image checks, crop, encode, concat.

Blocking functions: call them through `asyncio.to_thread` from async code.
"""
from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Self

import av
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel

from providers.errors import InvalidRequest, OutputInvalid

DEFAULT_FPS = 24


class VideoInfo(BaseModel):
    codec: str
    width: int
    height: int
    duration: float
    frames: int
    fps: float
    pix_fmt: str | None = None


def probe_video(path: Path) -> VideoInfo:
    """Open the file as a video and read its first stream; raises OutputInvalid if it is not one."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise OutputInvalid("The file has no video stream.")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = 0.0
            rate = stream.average_rate or stream.guessed_rate or 0
            # Decoding one frame proves the stream is playable, not just a valid header.
            next(container.decode(stream), None)
            return VideoInfo(
                codec=ctx.name,
                width=ctx.width,
                height=ctx.height,
                duration=duration,
                frames=stream.frames or 0,
                fps=float(rate),
                pix_fmt=ctx.pix_fmt,
            )
    except OutputInvalid:
        raise
    except (av.FFmpegError, OSError, StopIteration) as exc:
        raise OutputInvalid("The provider returned a file that is not a playable video.", detail=str(exc)) from exc


def first_frame(path: Path) -> Image.Image:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            return frame.to_image()
    raise OutputInvalid("The video has no frames.")


def last_frame(path: Path) -> Image.Image:
    last = None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            last = frame
    if last is None:
        raise OutputInvalid("The video has no frames.")
    return last.to_image()


def write_thumbnail(video: Path, dest: Path, max_side: int = 640) -> Path:
    """First frame as JPEG beside the video."""
    image = first_frame(video)
    image.thumbnail((max_side, max_side))
    image.convert("RGB").save(dest, "JPEG", quality=85)
    return dest


def load_image(path: Path, *, max_bytes: int) -> Image.Image:
    """Open a user-supplied image, refusing what is unreadable, not an image, or too large."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidRequest(f"Cannot read the image '{path.name}'; check the path.") from exc
    if size > max_bytes:
        raise InvalidRequest(
            f"The image is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. Send a smaller image."
        )
    return decode_image(path.read_bytes(), name=path.name)


def decode_image(data: bytes, *, name: str = "image") -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.verify()  # verify() leaves the image unusable: open again to load pixels
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidRequest(f"'{name}' is not an image Pillow can read; send a PNG, JPEG or WebP.") from exc
    return ImageOps.exif_transpose(image).convert("RGB")


def crop_to_size(image: Image.Image, width: int, height: int) -> Image.Image:
    """Centre-crop to the target ratio, then resize: the subject in the middle stays whole."""
    return ImageOps.fit(image.convert("RGB"), (width, height), method=Image.Resampling.LANCZOS)


class Mp4Writer:
    """H.264/yuv420p MP4 with the moov atom first (faststart), fed with Pillow images."""

    def __init__(self, path: Path, width: int, height: int, fps: int = DEFAULT_FPS, crf: int = 23) -> None:
        self.path = path
        self._container = av.open(str(path), mode="w", format="mp4", options={"movflags": "faststart"})
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"preset": "veryfast", "crf": str(crf)}

    def write(self, image: Image.Image) -> None:
        frame = av.VideoFrame.from_image(image.convert("RGB"))
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._container.close()


def iter_frames(path: Path) -> Iterator[Image.Image]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_image()


def _same_stream_format(a: Path, b: Path) -> bool:
    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        sa, sb = ca.streams.video[0].codec_context, cb.streams.video[0].codec_context
        return (
            sa.name == sb.name
            and (sa.width, sa.height) == (sb.width, sb.height)
            and sa.pix_fmt == sb.pix_fmt
            and bytes(sa.extradata or b"") == bytes(sb.extradata or b"")
        )


def concat_videos(first: Path, second: Path, dest: Path, fps: int = DEFAULT_FPS) -> None:
    """`first` followed by `second`. Packets are copied when both streams share codec
    parameters (no quality loss, no CPU); otherwise both are decoded and re-encoded."""
    if _same_stream_format(first, second):
        _remux_concat([first, second], dest)
        return
    info = probe_video(first)
    with Mp4Writer(dest, info.width, info.height, fps=fps) as writer:
        for src in (first, second):
            for image in iter_frames(src):
                if image.size != (info.width, info.height):
                    image = crop_to_size(image, info.width, info.height)
                writer.write(image)


def _remux_concat(parts: list[Path], dest: Path) -> None:
    with av.open(str(parts[0])) as template:
        in_stream = template.streams.video[0]
        out = av.open(str(dest), mode="w", format="mp4", options={"movflags": "faststart"})
        out_stream = out.add_stream_from_template(in_stream)
        time_base = in_stream.time_base or Fraction(1, 90000)
    offset = 0
    try:
        for part in parts:
            with av.open(str(part)) as container:
                stream = container.streams.video[0]
                scale = stream.time_base / time_base if stream.time_base else Fraction(1)
                last_end = 0
                for packet in container.demux(stream):
                    if packet.dts is None:
                        continue
                    pts = packet.pts if packet.pts is not None else packet.dts
                    end = int((pts + (packet.duration or 0)) * scale)
                    last_end = max(last_end, end)
                    packet.pts = int(pts * scale) + offset
                    packet.dts = int(packet.dts * scale) + offset
                    packet.duration = int((packet.duration or 0) * scale)
                    packet.stream = out_stream
                    out.mux(packet)
                offset += last_end
    finally:
        out.close()


def copy_file(src: Path, dest: Path) -> None:
    with src.open("rb") as fin, dest.open("wb") as fout:
        shutil.copyfileobj(fin, fout, length=1024 * 1024)


class FitResult(BaseModel):
    fits: bool
    size: int
    width: int
    height: int
    bitrate: int


def fit_to_size(src: Path, dest: Path, max_bytes: int, *, min_side: int = 144, attempts: int = 5) -> FitResult:
    """Re-encode `src` into `dest` so that it is at most `max_bytes`, for chat upload limits.

    The video bitrate is derived from the duration and the limit (with room for the MP4
    container), and the resolution is kept while that bitrate can still carry it; each
    miss scales down and tightens the budget. `fits` is False when even the smallest
    attempt is too large, so the caller can fall back to a thumbnail and say why.
    """
    info = probe_video(src)
    duration = max(info.duration, 0.1)
    fps = max(1, round(info.fps or DEFAULT_FPS))
    width, height = info.width, info.height
    # ~4 % and a fixed 4 KB for moov/mdat headers and the encoder's overshoot.
    budget_bits = max(0.0, (max_bytes * 0.96 - 4096) * 8)
    last = FitResult(fits=False, size=0, width=width, height=height, bitrate=0)
    for attempt in range(attempts):
        bitrate = int(budget_bits / duration * (0.85**attempt))
        if bitrate < 8_000:
            break
        # Below ~0.01 bit per pixel H.264 turns to mush: trade resolution for clarity.
        while width * height * fps * 0.01 > bitrate and min(width, height) > min_side:
            width, height = _even(width * 0.75), _even(height * 0.75)
        _encode_at_bitrate(src, dest, width, height, fps, bitrate)
        size = dest.stat().st_size
        last = FitResult(fits=size <= max_bytes, size=size, width=width, height=height, bitrate=bitrate)
        if last.fits:
            return last
        if min(width, height) > min_side:
            width, height = _even(width * 0.75), _even(height * 0.75)
    return last


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _encode_at_bitrate(src: Path, dest: Path, width: int, height: int, fps: int, bitrate: int) -> None:
    with av.open(str(src)) as inp, av.open(str(dest), mode="w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.bit_rate = bitrate
        # A capped VBV keeps the actual size close to the target instead of a CRF-like guess.
        stream.options = {
            "preset": "veryfast",
            "maxrate": str(bitrate),
            "bufsize": str(bitrate),
            "x264-params": "nal-hrd=vbr",
        }
        for index, frame in enumerate(inp.decode(video=0)):
            frame = frame.reformat(width=width, height=height, format="yuv420p")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
