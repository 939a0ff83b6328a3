"""Assertions shared by tests: a produced video is checked as a video."""
from __future__ import annotations

from pathlib import Path

import av


def assert_video(path: str | Path, *, width: int, height: int, seconds: float, codec: str = "h264", tolerance: float = 0.15) -> None:
    """Decode the whole file with PyAV: codec, size, pixel format and duration must match."""
    path = Path(path)
    assert path.exists(), f"{path} does not exist"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == codec
        assert (stream.codec_context.width, stream.codec_context.height) == (width, height)
        frames = 0
        last_time = 0.0
        for frame in container.decode(stream):
            frames += 1
            assert (frame.width, frame.height) == (width, height)
            assert frame.format.name == "yuv420p"
            if frame.time is not None:
                last_time = frame.time
        rate = float(stream.average_rate or 24)
    duration = last_time + 1 / rate
    assert frames > 0, "no decodable frames"
    assert abs(duration - seconds) <= tolerance, f"duration {duration:.3f}s, expected {seconds}s"


class AudioTrackInfo:
    """What `assert_audio` decoded: the format and the loudness over time."""

    def __init__(self, codec: str, rate: int, channels: int, seconds: float, levels: list[float], window: float) -> None:
        self.codec, self.rate, self.channels, self.seconds = codec, rate, channels, seconds
        #: RMS loudness (0..1 of full scale) of each `window` seconds, mixed down to mono.
        self.levels = levels
        self.window = window
        #: Zero crossings per second of each window, halved: the pitch of a pure tone.
        self.pitches: list[float] = []

    def level_between(self, start: float, end: float) -> list[float]:
        return self.levels[int(start / self.window) : int(end / self.window)]


def decode_audio(path: str | Path, *, window: float = 0.1) -> AudioTrackInfo | None:
    """Decode the first audio stream with PyAV (None when the file has none)."""
    import array
    import math

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        samples = array.array("h")
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                samples.frombytes(bytes(out.planes[0])[: out.samples * 2])
        info = AudioTrackInfo(
            stream.codec_context.name, rate, stream.codec_context.layout.nb_channels, len(samples) / rate, [], window
        )
    size = max(1, int(rate * window))
    for begin in range(0, len(samples) - size + 1, size):
        chunk = samples[begin : begin + size]
        info.levels.append(math.sqrt(sum(x * x for x in chunk) / size) / 32768)
        crossings = sum(1 for a, b in zip(chunk, chunk[1:]) if (a < 0) != (b < 0))
        info.pitches.append(crossings / window / 2)
    return info


def assert_audio(
    path: str | Path, *, seconds: float, rate: int | None = None, codec: str = "aac", tolerance: float = 0.1
) -> AudioTrackInfo:
    """The file has an audio stream of `codec` (and `rate`) whose decoded length is `seconds`."""
    info = decode_audio(path)
    assert info is not None, f"{path} has no audio stream"
    assert info.codec == codec, info.codec
    if rate is not None:
        assert info.rate == rate, f"sample rate {info.rate}, expected {rate}"
    # AAC decodes whole 1024-sample frames: the last one may run a few ms past the end.
    assert abs(info.seconds - seconds) <= tolerance, f"audio lasts {info.seconds:.3f}s, expected {seconds}s"
    return info


def assert_no_audio(path: str | Path) -> None:
    with av.open(str(path)) as container:
        assert not container.streams.audio, f"{path} has an audio stream it should not have"
