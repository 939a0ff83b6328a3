"""The local provider's renderer: an offline, deterministic clip drawn from the prompt.

Pure blocking code (Pillow + PyAV); the provider runs it in a worker thread.
"""
from __future__ import annotations

import array
import hashlib
import math
import random
import re
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageColor, ImageDraw, ImageFont

from providers.media import (
    AudioSpec,
    Mp4Writer,
    concat_videos,
    crop_to_size,
    iter_frames,
    last_frame,
    load_image,
    probe_video,
)

ProgressFn = Callable[[int], None]


class RenderCancelled(Exception):
    pass


def stable_seed(prompt: str, seed: int | None) -> int:
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def prompt_colours(prompt: str, rng: random.Random) -> list[tuple[int, int, int]]:
    """Colour words in the prompt come first (a 'teal coupe' is teal); the rest is seeded."""
    named = []
    for word in re.findall(r"[a-z]+", prompt.lower()):
        if word in ImageColor.colormap and word not in ("tan",):
            named.append(ImageColor.getrgb(word)[:3])
    colours = [tuple(int(c) for c in rgb) for rgb in named][:3]
    while len(colours) < 3:
        colours.append((rng.randrange(30, 230), rng.randrange(30, 230), rng.randrange(30, 230)))
    return colours  # type: ignore[return-value]


def _gradient(width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    column = Image.new("RGB", (1, height))
    for y in range(height):
        t = y / max(height - 1, 1)
        column.putpixel((0, y), tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    return column.resize((width, height))


def _font(height: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(10, height // 18))


#: The soundtrack's format: a synth needs no more, and the pure-Python samples stay cheap.
SOUND = AudioSpec(rate=24_000, layout="mono", bitrate=48_000)
_TABLE = 4096
_SINE = [math.sin(math.tau * i / _TABLE) for i in range(_TABLE)]
_SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10))  # major, natural minor
_PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 4), (5, 3, 0, 4), (0, 5, 1, 4))
_PATTERNS = ((0, 1, 2, 1), (0, 2, 1, 3), (0, 1, 2, 3), (3, 2, 1, 0))


class Soundtrack:
    """A deterministic endless piece for a prompt and seed: a soft pad chord per bar and a
    plucked arpeggio note on each beat. Sample n depends on n alone, so an extension
    renders the bars that follow the source clip's.

    Pure Python (table lookups), about 50 ms per second of sound at 24 kHz.
    """

    def __init__(self, prompt: str, seed: int | None, rate: int = SOUND.rate) -> None:
        # Its own stream of numbers: adding sound must not change the picture.
        rng = random.Random(stable_seed(prompt, seed) ^ 0x50_07_7D)
        self.rate = rate
        root = 110.0 * 2 ** (rng.randrange(12) / 12)  # A2 up to G#3
        scale = rng.choice(_SCALES)
        pattern = rng.choice(_PATTERNS)
        self.beat = int(rate * rng.choice((0.25, 0.3, 0.375, 0.5)))  # samples per beat
        self.bar = self.beat * 4
        self.chords: list[tuple[list[int], list[int]]] = []
        for degree in rng.choice(_PROGRESSIONS):
            steps = [scale[(degree + j) % 7] + 12 * ((degree + j) // 7) for j in (0, 2, 4)]
            freqs = [root * 2 ** (step / 12) for step in steps]
            arpeggio = [freqs[0] * 2, freqs[1] * 2, freqs[2] * 2, freqs[0] * 4]
            # Phase increments in table steps per sample: the loop below only adds and looks up.
            self.chords.append(
                ([round(f * _TABLE * 65536 / rate) for f in freqs],
                 [round(arpeggio[i] * _TABLE * 65536 / rate) for i in pattern])
            )  # fmt: skip
        attack = max(1, rate // 500)
        self.pluck = [min(1.0, i / attack) * math.exp(-4.0 * i / self.beat) for i in range(self.beat)]
        ramp = max(1, rate // 100)  # 10 ms in and out of each bar's chord: no clicks at changes
        self.swell = [min(1.0, i / ramp, (self.bar - i) / ramp) for i in range(self.bar)]

    def render(self, start: int, count: int) -> bytes:
        """Samples [start, start + count) as signed 16-bit mono PCM."""
        out = array.array("h", bytes(2 * count))
        sine, chords, pluck, swell = _SINE, self.chords, self.pluck, self.swell
        beat, bar, mask = self.beat, self.bar, _TABLE * 65536 - 1
        for i in range(count):
            n = start + i
            pad, notes = chords[(n // bar) % len(chords)]
            pos = n % beat
            voice = (sine[(n * pad[0] & mask) >> 16] + sine[(n * pad[1] & mask) >> 16] + sine[(n * pad[2] & mask) >> 16])
            note = notes[(n // beat) % 4]
            value = 0.12 * voice * swell[n % bar] + 0.3 * pluck[pos] * sine[(n * note & mask) >> 16]
            out[i] = int(value * 26000)
        return out.tobytes()


class _Scene:
    """Per-clip constants: background, shapes, caption. Frames differ by time only."""

    def __init__(self, prompt: str, width: int, height: int, seed: int | None, base: Image.Image | None) -> None:
        self.width, self.height = width, height
        rng = random.Random(stable_seed(prompt, seed))
        self.colours = prompt_colours(prompt, rng)
        self.base = base
        if base is not None:
            # A margin to pan and zoom over.
            self.canvas = crop_to_size(base, int(width * 1.2) // 2 * 2, int(height * 1.2) // 2 * 2)
            self.pan = (rng.uniform(-1, 1), rng.uniform(-1, 1))
        else:
            self.background = _gradient(width, height, self.colours[0], self.colours[1])
        # Shapes stand out from the sky: the third colour and the first one's complement.
        accents = [self.colours[2], tuple(255 - c for c in self.colours[0])]
        self.shapes = [
            (rng.uniform(0.05, 0.95), rng.uniform(0.1, 0.7), rng.uniform(0.03, 0.12),
             rng.uniform(0.2, 1.2), rng.uniform(0, math.tau), rng.choice(accents))
            for _ in range(rng.randint(3, 6))
        ]  # fmt: skip
        self.font = _font(height)
        wrap = max(12, int(width / (self.font.size * 0.55))) if hasattr(self.font, "size") else 40
        self.caption = textwrap.wrap(prompt, wrap)[:3]

    def frame(self, t: float, progress: float) -> Image.Image:
        w, h = self.width, self.height
        if self.base is not None:
            cw, ch = self.canvas.size
            zoom = 1.15 - 0.15 * progress  # slow push-in
            vw, vh = int(w * zoom), int(h * zoom)
            cx = (cw - vw) / 2 * (1 + self.pan[0] * progress * 0.8)
            cy = (ch - vh) / 2 * (1 + self.pan[1] * progress * 0.8)
            box = (int(cx), int(cy), int(cx) + vw, int(cy) + vh)
            image = self.canvas.crop(box).resize((w, h), Image.Resampling.BILINEAR)
        else:
            image = self.background.copy()
            draw = ImageDraw.Draw(image)
            for x, y, r, speed, phase, colour in self.shapes:
                px = (x + 0.25 * math.sin(t * speed + phase)) % 1.0 * w
                py = (y + 0.08 * math.cos(t * speed * 1.3 + phase)) * h
                rad = r * min(w, h)
                draw.ellipse((px - rad, py - rad, px + rad, py + rad), fill=colour, outline=(255, 255, 255))
        draw = ImageDraw.Draw(image)
        line_h = int(getattr(self.font, "size", 12) * 1.3)
        band = line_h * len(self.caption) + line_h // 2
        draw.rectangle((0, h - band, w, h), fill=(0, 0, 0))
        for i, line in enumerate(self.caption):
            draw.text((line_h // 2, h - band + line_h // 4 + i * line_h), line, fill=(255, 255, 255), font=self.font)
        draw.text((w - line_h * 4, line_h // 3), f"{t:05.2f}s", fill=(255, 255, 255), font=self.font)
        return image


def render_clip(
    dest: Path,
    *,
    prompt: str,
    seconds: int,
    width: int,
    height: int,
    fps: int,
    seed: int | None,
    base_image: Image.Image | None = None,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    progress_span: tuple[int, int] = (0, 100),
    soundtrack: Soundtrack | None = None,
    sound_from: int = 0,
) -> None:
    """Render the clip; with `soundtrack`, its samples from `sound_from` on are the sound."""
    scene = _Scene(prompt, width, height, seed, base_image)
    total = seconds * fps
    lo, hi = progress_span
    last_reported = -1
    with Mp4Writer(dest, width, height, fps=fps, audio=SOUND if soundtrack else None) as writer:
        for i in range(total):
            if cancel is not None and cancel.is_set():
                raise RenderCancelled()
            writer.write(scene.frame(i / fps, i / max(total - 1, 1)))
            if soundtrack is not None and writer.audio is not None:
                # Sound in step with each frame keeps the MP4 interleaved as it is written.
                begin, end = writer.audio_index(i), writer.audio_index(i + 1)
                writer.audio.write_pcm(soundtrack.render(sound_from + begin, end - begin))
            pct = lo + (hi - lo) * (i + 1) // total
            if on_progress is not None and pct != last_reported:
                last_reported = pct
                on_progress(pct)


def render_request(
    dest: Path,
    *,
    operation: str,
    prompt: str,
    seconds: int,
    size: tuple[int, int],
    fps: int,
    seed: int | None,
    input_image: Path | None,
    source_video: Path | None,
    max_image_bytes: int,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    audio: bool = False,
) -> None:
    """Render one request. With `audio` the clip gets a generated soundtrack; remix and
    extend also get one when their source has sound, so sound is never lost on the way."""
    width, height = size
    source = probe_video(source_video) if source_video is not None else None
    soundtrack = Soundtrack(prompt, seed) if audio or (source is not None and source.audio is not None) else None
    if operation == "extend":
        assert source_video is not None and source is not None
        segment = dest.with_name(dest.name + ".segment.mp4")
        try:
            render_clip(
                segment, prompt=prompt, seconds=seconds, width=source.width, height=source.height, fps=fps,
                seed=seed, base_image=last_frame(source_video), on_progress=on_progress, cancel=cancel,
                progress_span=(0, 95), soundtrack=soundtrack, sound_from=round(source.duration * SOUND.rate),
            )  # fmt: skip
            concat_videos(source_video, segment, dest, fps=fps)
        finally:
            segment.unlink(missing_ok=True)
        if on_progress is not None:
            on_progress(100)
        return
    base = None
    if operation == "remix":
        assert source_video is not None
        base = _middle_frame(source_video)
    elif input_image is not None:
        base = load_image(input_image, max_bytes=max_image_bytes)
    render_clip(
        dest, prompt=prompt, seconds=seconds, width=width, height=height, fps=fps, seed=seed,
        base_image=base, on_progress=on_progress, cancel=cancel, soundtrack=soundtrack,
    )  # fmt: skip


def _middle_frame(path: Path) -> Image.Image:
    frames = probe_video(path).frames or 1
    for i, image in enumerate(iter_frames(path)):
        if i >= frames // 2:
            return image
    return last_frame(path)


def render_still(dest: Path, *, prompt: str, width: int, height: int, seed: int | None) -> None:
    """One frame of the clip the same prompt and seed would give, as PNG."""
    _Scene(prompt, width, height, seed, None).frame(0.0, 0.0).save(dest, "PNG")
