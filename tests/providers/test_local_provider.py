"""The offline provider: real H.264, deterministic, animates images, never blocks the loop."""
from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

import av
from PIL import Image

from providers.base import Operation, RemoteStatus, VideoRequest
from providers.local import LocalVideoProvider
from providers.media import first_frame, probe_video
from providers.polling import PollPolicy, wait_for_completion
from tests.helpers import assert_audio, assert_no_audio, assert_video, decode_audio

FAST = PollPolicy(interval=0.01, min_interval=0.01)


async def _render(provider: LocalVideoProvider, request: VideoRequest, dest: Path) -> list[int]:
    progress: list[int] = []

    async def seen(job: object) -> None:
        progress.append(job.progress)  # type: ignore[attr-defined]

    remote = await provider.submit(request)
    done = await wait_for_completion(provider, remote.id, on_update=seen, policy=FAST)
    assert done.status is RemoteStatus.COMPLETED
    await provider.download(remote.id, dest)
    return progress


def _frame_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            digest.update(frame.to_image().tobytes())
    return digest.hexdigest()


async def test_same_seed_same_clip_other_seed_other_clip(tmp_path: Path) -> None:
    provider = LocalVideoProvider(tmp_path / "work", fps=12)
    base = VideoRequest(prompt="a teal coupe crossing a desert at noon", seconds=1, size="160x90", seed=42)
    await _render(provider, base, tmp_path / "a.mp4")
    await _render(provider, base, tmp_path / "b.mp4")
    await _render(provider, base.model_copy(update={"seed": 43}), tmp_path / "c.mp4")
    assert _frame_digest(tmp_path / "a.mp4") == _frame_digest(tmp_path / "b.mp4")
    assert _frame_digest(tmp_path / "a.mp4") != _frame_digest(tmp_path / "c.mp4")
    # A colour named in the prompt is the clip's colour: teal dominates the sky.
    r, g, b = first_frame(tmp_path / "a.mp4").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))  # type: ignore[misc]
    assert g > r and b > r


async def test_faststart_and_progress_reported(tmp_path: Path) -> None:
    provider = LocalVideoProvider(tmp_path / "work", fps=12)
    progress = await _render(provider, VideoRequest(prompt="rain on a window", seconds=4, size="1280x720", seed=1), tmp_path / "v.mp4")
    assert progress[-1] == 100 and len(set(progress)) >= 3, progress
    head = (tmp_path / "v.mp4").read_bytes()[:4096]
    assert head.find(b"moov") != -1 and head.find(b"moov") < max(head.find(b"mdat"), 4096), "moov before mdat (faststart)"
    info = probe_video(tmp_path / "v.mp4")
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")


async def test_animates_an_input_image(tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    Image.new("RGB", (400, 400), (220, 20, 20)).save(image)
    provider = LocalVideoProvider(tmp_path / "work", fps=12)
    request = VideoRequest(prompt="zoom", seconds=1, size="256x144", seed=3, input_image=image)
    await _render(provider, request, tmp_path / "v.mp4")
    assert_video(tmp_path / "v.mp4", width=256, height=144, seconds=1)
    r, g, b = first_frame(tmp_path / "v.mp4").crop((0, 0, 256, 60)).resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    assert r > 150 and g < 80 and b < 80, "the picture is the input image"


async def test_extend_appends_new_seconds(tmp_path: Path) -> None:
    provider = LocalVideoProvider(tmp_path / "work", fps=12)
    await _render(provider, VideoRequest(prompt="a kite", seconds=2, size="256x144", seed=5), tmp_path / "src.mp4")
    extend = VideoRequest(operation=Operation.EXTEND, prompt="a kite", seconds=1, size="256x144", seed=5, source_video=tmp_path / "src.mp4")
    await _render(provider, extend, tmp_path / "long.mp4")
    assert_video(tmp_path / "long.mp4", width=256, height=144, seconds=3)


async def test_rendering_runs_off_the_event_loop(tmp_path: Path) -> None:
    """Polls answered while the clip renders see it part done: the render leaves the loop free.
    (A render on the loop would answer every poll before or after it, never in between.
    How long the loop may stall is measured in bench/core.py, not asserted here.)"""
    provider = LocalVideoProvider(tmp_path / "work", fps=24)
    remote = await provider.submit(VideoRequest(prompt="a busy street", seconds=3, size="640x360", seed=9))
    midway: set[int] = set()
    while (job := await provider.poll(remote.id)).status is not RemoteStatus.COMPLETED:
        if job.status is RemoteStatus.IN_PROGRESS and 0 < job.progress < 100:
            midway.add(job.progress)
        await asyncio.sleep(0)
    assert len(midway) >= 3, f"the loop saw the render part done only at {sorted(midway)}: it ran on the loop"


async def test_poll_after_restart_renders_again(tmp_path: Path) -> None:
    first = LocalVideoProvider(tmp_path / "work", fps=12)
    remote = await first.submit(VideoRequest(prompt="a moth", seconds=1, size="128x72", seed=2))
    await first.aclose()  # the process died mid-render
    second = LocalVideoProvider(tmp_path / "work", fps=12)
    done = await wait_for_completion(second, remote.id, policy=FAST)
    assert done.status is RemoteStatus.COMPLETED
    await second.download(remote.id, tmp_path / "v.mp4")
    assert_video(tmp_path / "v.mp4", width=128, height=72, seconds=1)


async def test_a_render_is_resumed_from_the_shared_media_dir_mounted_elsewhere(tmp_path: Path) -> None:
    """A worker on another machine takes the job over: it sees the media volume at another path,
    and the spec's input image (inside the volume) is found there."""
    media = tmp_path / "here" / "media"
    (media / "inputs").mkdir(parents=True)
    image = media / "inputs" / "red.png"
    Image.new("RGB", (400, 400), (220, 20, 20)).save(image)
    first = LocalVideoProvider(media / "local-provider", fps=12)
    request = VideoRequest(prompt="zoom", seconds=1, size="256x144", seed=3, input_image=image)
    remote = await first.submit(request)
    await first.aclose()  # killed mid-render
    elsewhere = tmp_path / "there" / "media"
    elsewhere.parent.mkdir()
    shutil.move(media, elsewhere)  # the same volume, mounted at another path
    second = LocalVideoProvider(elsewhere / "local-provider", fps=12)
    done = await wait_for_completion(second, remote.id, policy=FAST)
    assert done.status is RemoteStatus.COMPLETED, done
    await second.download(remote.id, tmp_path / "v.mp4")
    r, g, b = first_frame(tmp_path / "v.mp4").crop((0, 0, 256, 60)).resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    assert r > 150 and g < 80 and b < 80, "the resumed render animates the job's own input image"


def _audio_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            digest.update(bytes(frame.planes[0]))
    return digest.hexdigest()


async def test_audio_adds_a_seeded_soundtrack_as_long_as_the_clip(tmp_path: Path) -> None:
    provider = LocalVideoProvider(tmp_path / "work", fps=12)
    base = VideoRequest(prompt="a kite over the sea", seconds=2, size="128x72", seed=4, audio=True)
    await _render(provider, base, tmp_path / "a.mp4")
    await _render(provider, base, tmp_path / "b.mp4")
    await _render(provider, base.model_copy(update={"seed": 5}), tmp_path / "c.mp4")
    await _render(provider, base.model_copy(update={"audio": False}), tmp_path / "quiet.mp4")
    assert_video(tmp_path / "a.mp4", width=128, height=72, seconds=2)
    sound = assert_audio(tmp_path / "a.mp4", seconds=2, rate=24_000)
    assert sound.channels == 1 and min(sound.level_between(0, 1.9)) > 0.02, sound.levels
    assert _audio_digest(tmp_path / "a.mp4") == _audio_digest(tmp_path / "b.mp4")
    assert _audio_digest(tmp_path / "a.mp4") != _audio_digest(tmp_path / "c.mp4")
    # The sound does not change the picture, and without `audio` there is no track at all.
    assert _frame_digest(tmp_path / "a.mp4") == _frame_digest(tmp_path / "quiet.mp4")
    assert_no_audio(tmp_path / "quiet.mp4")


async def test_extend_and_remix_keep_the_sound_of_their_source(tmp_path: Path) -> None:
    provider = LocalVideoProvider(tmp_path / "work", fps=12)
    src = tmp_path / "src.mp4"
    await _render(provider, VideoRequest(prompt="a kite", seconds=2, size="128x72", seed=5, audio=True), src)
    # Not asked again: the source's sound is reason enough.
    extend = VideoRequest(operation=Operation.EXTEND, prompt="a kite", seconds=1, size="128x72", seed=5, source_video=src)
    await _render(provider, extend, tmp_path / "long.mp4")
    assert_video(tmp_path / "long.mp4", width=128, height=72, seconds=3)
    sound = assert_audio(tmp_path / "long.mp4", seconds=3, rate=24_000)
    assert min(sound.level_between(0, 2.9)) > 0.02, sound.levels
    # The first two seconds are the source's own sound, untouched by the join.
    before = decode_audio(src)
    assert before is not None
    assert all(abs(a - b) < 0.02 for a, b in zip(before.level_between(0, 1.9), sound.level_between(0, 1.9)))

    remix = VideoRequest(operation=Operation.REMIX, prompt="a kite at night", seconds=1, size="128x72", seed=5, source_video=src)
    await _render(provider, remix, tmp_path / "remix.mp4")
    assert min(assert_audio(tmp_path / "remix.mp4", seconds=1).level_between(0, 0.9)) > 0.02

    # A silent source extended with `audio`: silence for the source, sound for the new second.
    await _render(provider, VideoRequest(prompt="a moth", seconds=1, size="128x72", seed=2), tmp_path / "quiet.mp4")
    loud_end = extend.model_copy(update={"source_video": tmp_path / "quiet.mp4", "audio": True})
    await _render(provider, loud_end, tmp_path / "mixed.mp4")
    mixed = assert_audio(tmp_path / "mixed.mp4", seconds=2, rate=24_000)
    assert max(mixed.level_between(0, 0.9)) < 0.005 and min(mixed.level_between(1.1, 1.9)) > 0.02, mixed.levels
