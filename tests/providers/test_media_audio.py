"""Sound survives every re-encode and join: decoded with PyAV, checked for place, pitch and silence."""
from __future__ import annotations

import array
import math
from pathlib import Path

import av
import pytest
from PIL import Image

from providers.local_render import Soundtrack, render_clip
from providers.media import AudioSpec, Mp4Writer, concat_many, concat_videos, fit_to_size, probe_video
from tests.helpers import assert_audio, assert_no_audio, assert_video, decode_audio

LOUD = 0.1  # RMS of the test tones is ~0.21 of full scale
QUIET = 0.005


def _clip(
    path: Path,
    *,
    seconds: float,
    fps: int = 12,
    size: tuple[int, int] = (128, 72),
    colour: tuple[int, int, int] = (200, 30, 30),
    tone: float | None = None,
    rate: int = 24_000,
    layout: str = "mono",
) -> Path:
    """A solid-colour clip, with a pure tone of `tone` Hz as its sound when given."""
    spec = AudioSpec(rate=rate, layout=layout, bitrate=64_000) if tone else None
    with Mp4Writer(path, *size, fps=fps, audio=spec) as writer:
        for k in range(round(seconds * fps)):
            writer.write(Image.new("RGB", size, colour))
            if spec is not None and writer.audio is not None and tone is not None:
                begin, end = writer.audio_index(k), writer.audio_index(k + 1)
                samples = array.array(
                    "h",
                    (int(10_000 * math.sin(math.tau * tone * n / rate)) for n in range(begin, end) for _ in range(spec.channels)),
                )
                writer.audio.write_pcm(samples.tobytes())
    return path


def _frames(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as container:
        return [frame.to_image() for frame in container.decode(video=0)]


def _video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def _centre(image: Image.Image) -> tuple[int, int, int]:
    return image.getpixel((image.width // 2, image.height // 2))  # type: ignore[return-value]


def test_a_clip_with_sound_keeps_it_when_fitted_to_a_limit(tmp_path: Path) -> None:
    src = tmp_path / "src.mp4"
    render_clip(
        src, prompt="a busy harbour with cranes and gulls", seconds=2, width=320, height=180, fps=12, seed=7,
        soundtrack=Soundtrack("a busy harbour", 7),
    )  # fmt: skip
    original = src.stat().st_size
    limit = original // 2
    result = fit_to_size(src, tmp_path / "fit.mp4", limit)
    assert result.fits and (tmp_path / "fit.mp4").stat().st_size <= limit, (result, original)
    assert result.audio_bitrate > 0
    info = probe_video(tmp_path / "fit.mp4")
    assert abs(info.duration - 2) < 0.1 and info.audio is not None
    sound = assert_audio(tmp_path / "fit.mp4", seconds=2, rate=24_000)
    assert min(sound.level_between(0, 1.9)) > QUIET, sound.levels


def test_fitting_a_clip_without_sound_adds_none(tmp_path: Path) -> None:
    src = tmp_path / "src.mp4"
    render_clip(src, prompt="a busy harbour with cranes and gulls", seconds=2, width=320, height=180, fps=12, seed=7)
    result = fit_to_size(src, tmp_path / "fit.mp4", src.stat().st_size // 2)
    assert result.fits and result.audio_bitrate == 0, result
    assert_no_audio(tmp_path / "fit.mp4")
    assert_video(tmp_path / "fit.mp4", width=result.width, height=result.height, seconds=2)


def test_joining_two_clips_with_sound_keeps_each_sound_in_its_place(tmp_path: Path) -> None:
    a = _clip(tmp_path / "a.mp4", seconds=1, tone=440)
    b = _clip(tmp_path / "b.mp4", seconds=1, colour=(30, 30, 200), tone=880)
    concat_videos(a, b, tmp_path / "ab.mp4", fps=12)
    # Same format: the picture's packets are copied, not re-encoded.
    assert _video_packets(tmp_path / "ab.mp4") == _video_packets(a) + _video_packets(b)
    assert_video(tmp_path / "ab.mp4", width=128, height=72, seconds=2)
    sound = assert_audio(tmp_path / "ab.mp4", seconds=2, rate=24_000)
    assert min(sound.level_between(0, 1.9)) > LOUD
    # The tone changes where the picture does: 440 Hz for the first second, then 880 Hz.
    assert all(abs(p - 440) < 30 for p in sound.pitches[1:9]), sound.pitches
    assert all(abs(p - 880) < 30 for p in sound.pitches[11:19]), sound.pitches


@pytest.mark.parametrize("order", ["sound_first", "silent_first"])
def test_joining_with_a_silent_clip_pads_silence_for_it(tmp_path: Path, order: str) -> None:
    loud = _clip(tmp_path / "loud.mp4", seconds=1, tone=440)
    silent = _clip(tmp_path / "silent.mp4", seconds=1, colour=(30, 30, 200))
    parts = [loud, silent] if order == "sound_first" else [silent, loud]
    concat_many(parts, tmp_path / "out.mp4", fps=12)
    assert_video(tmp_path / "out.mp4", width=128, height=72, seconds=2)
    sound = assert_audio(tmp_path / "out.mp4", seconds=2, rate=24_000)
    loud_half, quiet_half = (slice(0, 9), slice(11, 20)) if order == "sound_first" else (slice(11, 19), slice(0, 9))
    assert min(sound.levels[loud_half]) > LOUD, sound.levels
    assert max(sound.levels[quiet_half]) < QUIET, sound.levels


def test_joining_clips_of_other_sizes_and_rates_reencodes_and_keeps_sound(tmp_path: Path) -> None:
    a = _clip(tmp_path / "a.mp4", seconds=1, fps=12, size=(128, 72), tone=440)
    # Another size and aspect, 24 fps, 44.1 kHz stereo: resized, retimed and resampled.
    b = _clip(tmp_path / "b.mp4", seconds=1.5, fps=24, size=(160, 120), colour=(30, 200, 30), tone=660, rate=44_100, layout="stereo")
    concat_many([a, b], tmp_path / "out.mp4", fps=12)
    assert_video(tmp_path / "out.mp4", width=128, height=72, seconds=2.5)
    assert probe_video(tmp_path / "out.mp4").frames == 30
    sound = assert_audio(tmp_path / "out.mp4", seconds=2.5, rate=24_000)
    assert min(sound.level_between(0, 2.4)) > LOUD
    assert all(abs(p - 660) < 30 for p in sound.pitches[11:24]), sound.pitches
    frames = _frames(tmp_path / "out.mp4")
    r, g, b_ = _centre(frames[20])
    assert g > 150 and r < 80, "the second clip fills the frame"

    # Asked for another size and rate, even matching parts are re-encoded to it.
    concat_many([a, a], tmp_path / "big.mp4", fps=24, size=(192, 108))
    assert_video(tmp_path / "big.mp4", width=192, height=108, seconds=2)
    assert probe_video(tmp_path / "big.mp4").frames == 48
    assert_audio(tmp_path / "big.mp4", seconds=2)


def test_a_fade_overlaps_the_clips_and_blends_picture_and_sound(tmp_path: Path) -> None:
    red = _clip(tmp_path / "red.mp4", seconds=1, colour=(220, 0, 0), tone=440)
    blue = _clip(tmp_path / "blue.mp4", seconds=1.5, colour=(0, 0, 220))
    green = _clip(tmp_path / "green.mp4", seconds=1, colour=(0, 220, 0), tone=880)
    out = tmp_path / "fade.mp4"
    concat_many([red, blue, green], out, fps=12, transition="fade", fade_seconds=0.5)
    # Three and a half seconds less two overlaps of half a second.
    assert_video(out, width=128, height=72, seconds=2.5)
    frames = [_centre(f) for f in _frames(out)]
    assert len(frames) == 30
    # Frames 6..11 show red turning blue, each a weighted mix of both (1/7 more blue a frame).
    for k, (r, _, b) in enumerate(frames[6:12]):
        weight = (k + 1) / 7
        assert abs(r - 220 * (1 - weight)) < 12 and abs(b - 220 * weight) < 12, frames[6:12]
    assert frames[3][0] > 200 and frames[14][2] > 200 and frames[27][1] > 200
    for k, (_, g, b) in enumerate(frames[18:24]):  # blue into green
        weight = (k + 1) / 7
        assert abs(b - 220 * (1 - weight)) < 12 and abs(g - 220 * weight) < 12, frames[18:24]
    sound = assert_audio(out, seconds=2.5, rate=24_000)
    # Red's 440 Hz fades out over the first overlap into the silent blue clip, green's 880 Hz
    # fades in over the second.
    assert min(sound.level_between(0, 0.5)) > LOUD
    fading = sound.level_between(0.5, 1.0)
    assert fading == sorted(fading, reverse=True) and fading[0] > 3 * fading[-1], sound.levels
    assert max(sound.level_between(1.0, 1.5)) < QUIET
    rising = sound.level_between(1.5, 2.0)
    assert rising == sorted(rising) and rising[-1] > 3 * rising[0], sound.levels
    assert min(sound.level_between(2.0, 2.4)) > LOUD


def test_clips_without_sound_stay_without_sound(tmp_path: Path) -> None:
    a = _clip(tmp_path / "a.mp4", seconds=1)
    b = _clip(tmp_path / "b.mp4", seconds=1, size=(160, 120))
    concat_many([a, a], tmp_path / "remux.mp4", fps=12)
    concat_many([a, b], tmp_path / "reencode.mp4", fps=12, transition="fade")
    for out in ("remux.mp4", "reencode.mp4"):
        assert_no_audio(tmp_path / out)
    assert_video(tmp_path / "reencode.mp4", width=128, height=72, seconds=1.5)
    assert decode_audio(tmp_path / "remux.mp4") is None
