"""Media work with PyAV and Pillow: probe, thumbnails, image checks, crop, encode, concat.

Blocking functions: call them through `asyncio.to_thread` from async code.
"""
from __future__ import annotations

import array
import shutil
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Literal, Self

import av
from PIL import Image, ImageOps
from pydantic import BaseModel

from providers.errors import InvalidRequest, OutputInvalid
from providers.input_images import open_image

DEFAULT_FPS = 24


class AudioInfo(BaseModel):
    codec: str
    rate: int
    channels: int
    duration: float


class VideoInfo(BaseModel):
    codec: str
    width: int
    height: int
    duration: float
    frames: int
    fps: float
    pix_fmt: str | None = None
    #: The first audio stream, when the file has sound.
    audio: AudioInfo | None = None


def _audio_info(container: av.container.InputContainer) -> AudioInfo | None:
    if not container.streams.audio:
        return None
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    else:
        duration = (container.duration or 0) / av.time_base
    return AudioInfo(
        codec=ctx.name, rate=ctx.sample_rate or stream.rate or 0, channels=ctx.layout.nb_channels, duration=duration
    )


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
                audio=_audio_info(container),
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
    """An image from outside, through the one door (`providers.input_images`): allowed formats
    only, the pixel ceiling checked from the header before decoding, decodes bounded per core."""
    return open_image(data, name=name)


def crop_to_size(image: Image.Image, width: int, height: int) -> Image.Image:
    """Centre-crop to the target ratio, then resize: the subject in the middle stays whole."""
    return ImageOps.fit(image.convert("RGB"), (width, height), method=Image.Resampling.LANCZOS)


class AudioSpec(BaseModel):
    """The AAC track an output gets: PCM is resampled to this rate and layout."""

    rate: int = 48_000
    layout: str = "stereo"  # "mono" or "stereo": chat clients need nothing more
    bitrate: int = 96_000

    @property
    def channels(self) -> int:
        return 1 if self.layout == "mono" else 2


# The sample rates AAC-LC signals; anything else is resampled to 48 kHz.
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
_CHUNK = 4096  # samples per PCM frame handed to the encoder


class AudioTrack:
    """An AAC stream of an output container, fed with interleaved signed 16-bit PCM.

    The encoder's own resampler converts to its planar float format and cuts its 1024-sample
    frames, so callers can hand over any number of samples at a time.
    """

    def __init__(self, container: av.container.OutputContainer, spec: AudioSpec) -> None:
        self.spec = spec
        self._container = container
        self._stream = container.add_stream("aac", rate=spec.rate)
        self._stream.layout = spec.layout
        self._stream.bit_rate = spec.bitrate
        self.sample_bytes = 2 * spec.channels
        #: Samples handed to the encoder so far (the next sample's index).
        self.position = 0

    def write_pcm(self, data: bytes) -> None:
        step = _CHUNK * self.sample_bytes
        data = data[: len(data) - len(data) % self.sample_bytes]
        for begin in range(0, len(data), step):
            chunk = data[begin : begin + step]
            samples = len(chunk) // self.sample_bytes
            frame = av.AudioFrame(format="s16", layout=self.spec.layout, samples=samples)
            frame.planes[0].update(chunk)
            frame.rate = self.spec.rate
            frame.pts = self.position
            frame.time_base = Fraction(1, self.spec.rate)
            self.position += samples
            for packet in self._stream.encode(frame):
                self._container.mux(packet)

    def write_silence(self, samples: int) -> None:
        while samples > 0:
            n = min(samples, _CHUNK)
            self.write_pcm(bytes(n * self.sample_bytes))
            samples -= n

    def flush(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)


class Mp4Writer:
    """H.264/yuv420p MP4 with the moov atom first (faststart), fed frame by frame.

    Quality is CRF unless `bitrate` is given (then a capped VBR that keeps the size near the
    target). With `audio`, the file also gets an AAC track written through `self.audio`.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: int = DEFAULT_FPS,
        crf: int = 23,
        *,
        bitrate: int | None = None,
        audio: AudioSpec | None = None,
    ) -> None:
        self.path = path
        self.width, self.height, self.fps = width, height, fps
        self._container = av.open(str(path), mode="w", format="mp4", options={"movflags": "faststart"})
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = Fraction(1, fps)
        if bitrate is None:
            self._stream.options = {"preset": "veryfast", "crf": str(crf)}
        else:
            self._stream.bit_rate = bitrate
            self._stream.options = {
                "preset": "veryfast",
                "maxrate": str(bitrate),
                "bufsize": str(bitrate),
                "x264-params": "nal-hrd=vbr",
            }
        self.audio = AudioTrack(self._container, audio) if audio is not None else None
        #: Video frames written so far.
        self.frames = 0

    def audio_index(self, frame: int) -> int:
        """The first audio sample of video frame `frame`: audio and video share one clock."""
        assert self.audio is not None
        return round(frame * self.audio.spec.rate / self.fps)

    def write(self, image: Image.Image) -> None:
        self.write_frame(av.VideoFrame.from_image(image.convert("RGB")))

    def write_frame(self, frame: av.VideoFrame) -> None:
        """One frame of `width`x`height` (any pixel format); timestamps are the writer's."""
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        frame.pts = self.frames
        frame.time_base = Fraction(1, self.fps)
        self.frames += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        if self.audio is not None:
            self.audio.flush()
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


# --- Probing the parts of a join ----------------------------------------------------------


class _Part(BaseModel):
    path: Path
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    extradata: bytes
    fps: float
    duration: float
    audio: AudioInfo | None


def _probe_part(path: Path) -> _Part:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise OutputInvalid("The file has no video stream.")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            if stream.frames and rate:
                duration = stream.frames / rate
            elif stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = (container.duration or 0) / av.time_base
            return _Part(
                path=path,
                codec=ctx.name,
                width=ctx.width,
                height=ctx.height,
                pix_fmt=ctx.pix_fmt,
                extradata=bytes(ctx.extradata or b""),
                fps=rate,
                duration=duration,
                audio=_audio_info(container),
            )
    except OutputInvalid:
        raise
    except (av.FFmpegError, OSError) as exc:
        raise OutputInvalid("A clip to join is not a playable video.", detail=str(exc)) from exc


def _audio_spec_for(info: AudioInfo, bitrate: int | None = None) -> AudioSpec:
    """Keep the source's rate when AAC can carry it, at most two channels, a modest bitrate."""
    layout = "mono" if info.channels == 1 else "stereo"
    rate = info.rate if info.rate in AAC_RATES else 48_000
    if bitrate is None:
        bitrate = 64_000 if layout == "mono" else 96_000
    return AudioSpec(rate=rate, layout=layout, bitrate=bitrate)


# --- Audio placed on a video timeline -----------------------------------------------------


class _AudioTimeline:
    """Lays the audio of consecutive parts onto one track, in step with their video.

    Each part owns the samples [start, end) of the output: its audio is trimmed at `end`,
    padded with silence where it is short, late or absent, and the samples from `hold_from`
    on are held back to be crossfaded into the head of the next part (which starts there).
    """

    def __init__(self, track: AudioTrack) -> None:
        self.track = track
        self._tail = b""  # the previous part's held end, mixed into this part's head
        self._held = bytearray()
        self.start = self.end = self.hold_from = self.cursor = 0
        self._skip = 0
        self._resampler: av.AudioResampler | None = None
        self._aligned = False

    def begin_part(self, start: int, end: int, hold_from: int | None = None) -> None:
        position = self.track.position
        if self._tail and start != position:  # not an overlap after all: play the tail as it is
            self.track.write_pcm(self._tail)
            self._tail = b""
            position = self.track.position
        if start > position:
            self.track.write_silence(start - position)
            position = start
        # The previous part ran past its planned end (remux plans from metadata): drop that
        # much of this part's head rather than drift out of step with the picture.
        self._skip = position - start if start < position else 0
        self.start = self.cursor = position
        self.end = max(end, position)
        self.hold_from = self.end if hold_from is None else min(max(hold_from, position), self.end)
        self._resampler = None
        self._aligned = False

    def feed(self, frame: av.AudioFrame, at: float | None) -> None:
        """One decoded frame of this part; `at` is its time from the part's video start."""
        spec = self.track.spec
        if not self._aligned:
            self._aligned = True
            offset = round((at or 0.0) * spec.rate)
            if offset > 0:  # the sound starts after the picture
                self.pad_to(self.cursor + offset)
            elif offset < 0:  # sound from before the first frame is not shown
                self._skip += -offset
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout=spec.layout, rate=spec.rate)
        for out in self._resampler.resample(frame):
            self._emit(bytes(out.planes[0])[: out.samples * self.track.sample_bytes])

    def pad_to(self, index: int) -> None:
        """Silence up to sample `index` (for parts without sound, called as frames go out)."""
        index = min(index, self.end)
        if index > self.cursor:
            self._emit(bytes((index - self.cursor) * self.track.sample_bytes), pad=True)

    def end_part(self, end: int | None = None) -> None:
        """Finish the part; `end` replaces the planned end once the real one is known."""
        if self._resampler is not None:
            for out in self._resampler.resample(None):
                self._emit(bytes(out.planes[0])[: out.samples * self.track.sample_bytes])
        if end is not None:
            held_all = self.hold_from >= self.end
            self.end = max(end, self.start)
            self.hold_from = self.end if held_all else min(self.hold_from, self.end)
        self.pad_to(self.end)
        self._tail = bytes(self._held)
        self._held.clear()

    def close(self) -> None:
        if self._tail:
            self.track.write_pcm(self._tail)
            self._tail = b""

    def _emit(self, data: bytes, *, pad: bool = False) -> None:
        size = self.track.sample_bytes
        if self._skip and not pad:
            drop = min(self._skip, len(data) // size)
            data = data[drop * size :]
            self._skip -= drop
        data = data[: max(0, self.end - self.cursor) * size]
        while data:
            mixed = (self.cursor - self.start) * size  # bytes of the tail already mixed
            if mixed < len(self._tail):
                n = min(len(data), len(self._tail) - mixed)
                fade = len(self._tail) // size
                self.track.write_pcm(
                    _crossfade(self._tail[mixed : mixed + n], data[:n], mixed // size, fade, self.track.spec.channels)
                )
                if mixed + n >= len(self._tail):
                    self._tail = b""
            elif self.cursor >= self.hold_from:
                n = len(data)
                self._held.extend(data)
            else:
                n = min(len(data), (self.hold_from - self.cursor) * size)
                self.track.write_pcm(data[:n])
            self.cursor += n // size
            data = data[n:]


def _crossfade(out: bytes, into: bytes, first: int, total: int, channels: int) -> bytes:
    """Linear crossfade of two s16 chunks; `first` is the chunk's sample offset in the fade."""
    a, b = array.array("h"), array.array("h")
    a.frombytes(out)
    b.frombytes(into)
    for i in range(len(b)):
        gain = (first + i // channels + 0.5) / total
        b[i] = int(a[i] + (b[i] - a[i]) * gain)
    return b.tobytes()


# --- Joining --------------------------------------------------------------------------------


def concat_videos(first: Path, second: Path, dest: Path, fps: int | None = None) -> None:
    """`first` followed by `second` (a hard cut); see `concat_many`."""
    if fps is None:
        fps = round(_probe_part(first).fps) or DEFAULT_FPS
    concat_many([first, second], dest, fps=fps)


def concat_many(
    parts: list[Path],
    dest: Path,
    *,
    fps: int,
    size: tuple[int, int] | None = None,
    transition: Literal["cut", "fade"] = "cut",
    fade_seconds: float = 0.5,
) -> None:
    """Join clips into one MP4 of `size` (default: the first part's) at `fps`.

    Packets are copied when every part already has that format (same codec parameters,
    size and frame rate) and the transition is a cut: no quality loss, little CPU.
    Otherwise every frame is decoded and re-encoded: resized (centre-cropped when the
    aspect differs) and retimed to `fps`. `fade` crossfades picture and sound over
    `fade_seconds` between consecutive parts, so the result is that much shorter per join.

    When any part has sound the result has an AAC track covering the whole video, each
    part's sound at its part's time, silence where a part has none. Streams frame by frame.
    """
    if not parts:
        raise ValueError("concat_many needs at least one part")
    infos = [_probe_part(p) for p in parts]
    width, height = size or (infos[0].width, infos[0].height)
    width, height = _even(width), _even(height)
    with_audio = next((i.audio for i in infos if i.audio is not None), None)
    audio = _audio_spec_for(with_audio) if with_audio is not None else None
    counts = [max(1, round(i.duration * fps)) for i in infos]
    fade = 0
    if transition == "fade" and len(parts) > 1:
        # At most half the shortest part, so a fade never spans three clips.
        fade = max(0, min(round(fade_seconds * fps), min(counts) // 2))
    elif transition not in ("cut", "fade"):
        raise ValueError(f"unknown transition {transition!r}")
    first = infos[0]
    same = all(
        (i.codec, i.width, i.height, i.pix_fmt, i.extradata) == (first.codec, first.width, first.height, first.pix_fmt, first.extradata)
        and abs(i.fps - fps) < 0.01
        for i in infos
    )
    if same and fade == 0 and (first.width, first.height) == (width, height):
        _remux_concat(infos, dest, audio)
        return
    _reencode(infos, counts, dest, width=width, height=height, fps=fps, fade=fade, audio=audio)


def _remux_concat(parts: list[_Part], dest: Path, audio: AudioSpec | None) -> None:
    """Copy the video packets of every part; re-encode sound (cheap) to keep it in step."""
    with av.open(str(parts[0].path)) as template:
        in_stream = template.streams.video[0]
        out = av.open(str(dest), mode="w", format="mp4", options={"movflags": "faststart"})
        out_stream = out.add_stream_from_template(in_stream)
        time_base = in_stream.time_base or Fraction(1, 90000)
    timeline = _AudioTimeline(AudioTrack(out, audio)) if audio is not None else None
    rate = audio.rate if audio is not None else 0
    offset = 0
    try:
        for part in parts:
            with av.open(str(part.path)) as container:
                stream = container.streams.video[0]
                origin = _start_time(stream)
                scale = stream.time_base / time_base if stream.time_base else Fraction(1)
                start_s = float(offset * time_base)
                if timeline is not None:
                    timeline.begin_part(round(start_s * rate), round((start_s + part.duration) * rate))
                streams = [stream]
                if timeline is not None and part.audio is not None:
                    streams.append(container.streams.audio[0])
                last_end = 0
                for packet in container.demux(*streams):
                    if packet.stream.type == "audio":
                        assert timeline is not None
                        for frame in packet.decode():
                            timeline.feed(frame, _rel_time(frame, origin))
                        continue
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
                    if timeline is not None and part.audio is None:
                        timeline.pad_to(round(float((offset + end) * time_base) * rate))
                offset += last_end
                if timeline is not None:
                    timeline.end_part(round(float(offset * time_base) * rate))
        if timeline is not None:
            timeline.close()
            timeline.track.flush()
    finally:
        out.close()


def _start_time(stream: av.stream.Stream) -> float:
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


def _rel_time(frame: av.frame.Frame, origin: float) -> float | None:
    return None if frame.time is None else frame.time - origin


class _Retimer:
    """Turns a part's decoded frames into exactly `count` frames at `fps`: output frame k shows
    the source frame on screen at the middle of its slot (duplicates or drops as needed)."""

    def __init__(self, fps: int, count: int, src_fps: float, emit: Callable[[av.VideoFrame, int], None]) -> None:
        self.fps, self.count, self.src_fps, self.emit = fps, count, src_fps or fps, emit
        self.k = 0
        self.seen = 0
        self.prev: av.VideoFrame | None = None

    def push(self, frame: av.VideoFrame, at: float | None) -> None:
        t = at if at is not None else self.seen / self.src_fps
        self.seen += 1
        while self.prev is not None and self.k < self.count and (self.k + 0.5) / self.fps < t:
            self.emit(self.prev, self.k)
            self.k += 1
        self.prev = frame

    def finish(self) -> None:
        if self.prev is None:
            raise OutputInvalid("A clip to join has no frames.")
        while self.k < self.count:
            self.emit(self.prev, self.k)
            self.k += 1


def _scaler(width: int, height: int) -> Callable[[av.VideoFrame], av.VideoFrame]:
    def scale(frame: av.VideoFrame) -> av.VideoFrame:
        if (frame.width, frame.height) == (width, height):
            return frame.reformat(format="yuv420p")
        if abs(frame.width / frame.height - width / height) < 0.01:
            return frame.reformat(width=width, height=height, format="yuv420p")
        # Another aspect: centre-crop so the subject stays whole instead of stretching.
        return av.VideoFrame.from_image(crop_to_size(frame.to_image(), width, height)).reformat(format="yuv420p")

    return scale


def _blend(a: av.VideoFrame, b: av.VideoFrame, alpha: float) -> av.VideoFrame:
    return av.VideoFrame.from_image(Image.blend(a.to_image(), b.to_image(), alpha))


class _Joiner:
    """Decodes parts one after another into one writer; consecutive parts overlap by
    `fade` frames (and their sound). Only that overlap is ever held in memory."""

    def __init__(self, writer: Mp4Writer, fade: int) -> None:
        self.writer = writer
        self.fade = fade
        self.scale = _scaler(writer.width, writer.height)
        self.timeline = _AudioTimeline(writer.audio) if writer.audio is not None else None
        self.tail: list[av.VideoFrame] = []  # the previous part's last frames, to blend
        self.start = 0  # the output frame where the current part begins

    def add(self, part: _Part, count: int, *, last: bool) -> None:
        head = len(self.tail)
        hold = 0 if last else self.fade
        held: list[av.VideoFrame] = []
        writer, timeline = self.writer, self.timeline
        silent = part.audio is None
        start = self.start

        def emit(frame: av.VideoFrame, k: int) -> None:
            frame = self.scale(frame)
            if k < head:
                frame = _blend(self.tail[k], frame, (k + 1) / (head + 1))
            if k >= count - hold:
                held.append(frame)
            else:
                writer.write_frame(frame)
            if timeline is not None and silent:
                timeline.pad_to(writer.audio_index(start + k + 1))

        if timeline is not None:
            timeline.begin_part(
                writer.audio_index(start), writer.audio_index(start + count), writer.audio_index(start + count - hold)
            )
        with av.open(str(part.path)) as container:
            stream = container.streams.video[0]
            origin = _start_time(stream)
            retimer = _Retimer(writer.fps, count, part.fps, emit)
            streams = [stream]
            if timeline is not None and not silent:
                streams.append(container.streams.audio[0])
            for packet in container.demux(*streams):
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        retimer.push(frame, _rel_time(frame, origin))
                    elif timeline is not None:
                        timeline.feed(frame, _rel_time(frame, origin))
            retimer.finish()
        if timeline is not None:
            timeline.end_part()
        self.tail = held
        self.start += count - hold

    def close(self) -> None:
        for frame in self.tail:
            self.writer.write_frame(frame)
        if self.timeline is not None:
            self.timeline.close()


def _reencode(
    parts: list[_Part],
    counts: list[int],
    dest: Path,
    *,
    width: int,
    height: int,
    fps: int,
    fade: int,
    audio: AudioSpec | None,
    bitrate: int | None = None,
) -> None:
    with Mp4Writer(dest, width, height, fps=fps, bitrate=bitrate, audio=audio) as writer:
        joiner = _Joiner(writer, fade)
        for index, (part, count) in enumerate(zip(parts, counts)):
            joiner.add(part, count, last=index == len(parts) - 1)
        joiner.close()


def copy_file(src: Path, dest: Path) -> None:
    with src.open("rb") as fin, dest.open("wb") as fout:
        shutil.copyfileobj(fin, fout, length=1024 * 1024)


class FitResult(BaseModel):
    fits: bool
    size: int
    width: int
    height: int
    bitrate: int
    audio_bitrate: int = 0


def fit_to_size(src: Path, dest: Path, max_bytes: int, *, min_side: int = 144, attempts: int = 5) -> FitResult:
    """Re-encode `src` into `dest` so that it is at most `max_bytes`, for chat upload limits.

    The bitrate is derived from the duration and the limit (with room for the MP4
    container), and the resolution is kept while that bitrate can still carry it; each
    miss scales down and tightens the budget. Sound is kept (AAC, a tenth of the budget
    within 24-96 kb/s). `fits` is False when even the smallest attempt is too large, so
    the caller can fall back to a thumbnail and say why.
    """
    part = _probe_part(src)
    duration = max(part.duration, 0.1)
    fps = max(1, round(part.fps or DEFAULT_FPS))
    count = max(1, round(part.duration * fps))
    width, height = part.width, part.height
    # ~4 % and a fixed 4 KB for moov/mdat headers and the encoders' overshoot.
    budget_bits = max(0.0, (max_bytes * 0.96 - 4096) * 8)
    last = FitResult(fits=False, size=0, width=width, height=height, bitrate=0)
    for attempt in range(attempts):
        total = int(budget_bits / duration * (0.85**attempt))
        audio = None
        if part.audio is not None:
            spec = _audio_spec_for(part.audio)
            audio = spec.model_copy(update={"bitrate": int(min(spec.bitrate, max(24_000, total * 0.1)))})
        bitrate = total - (audio.bitrate if audio else 0)
        if bitrate < 8_000:
            break
        # Below ~0.01 bit per pixel H.264 turns to mush: trade resolution for clarity.
        while width * height * fps * 0.01 > bitrate and min(width, height) > min_side:
            width, height = _even(width * 0.75), _even(height * 0.75)
        _reencode([part], [count], dest, width=width, height=height, fps=fps, fade=0, audio=audio, bitrate=bitrate)
        size = dest.stat().st_size
        last = FitResult(
            fits=size <= max_bytes, size=size, width=width, height=height, bitrate=bitrate,
            audio_bitrate=audio.bitrate if audio else 0,
        )  # fmt: skip
        if last.fits:
            return last
        if min(width, height) > min_side:
            width, height = _even(width * 0.75), _even(height * 0.75)
    return last


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)
