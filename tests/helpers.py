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
