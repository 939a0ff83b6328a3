"""The runner step of a story job: scenes in order as child jobs, then the join.

A story is a parent job (kind `story`) that holds the plan (`state["plan"]`). Each scene is an
ordinary child job (`parent_id` = the story, `state["story_scene"]` = k) with its own row, events
and cost, driven by the same runner. `StoryDriver.drive` creates scene k once scene k-1 has
finished, waits for it, and at the end joins the scenes into one MP4 plus a numbered storyboard.

The driver sees the runner only through `JobContext` (bot/core/context.py). Crash safety comes from
the store: scene k is looked up among the story's children before it is created, finished scenes
are reused, and the next scene's start frame is a file written atomically beside the story.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bot.core.context import JobContext
from bot.core.ids import new_job_id
from bot.core.models import EventKind, GenerateParams, Job, JobKind, JobStatus
from bot.core.story_plan import StoryPlan
from providers.base import Operation, VideoRequest, parse_size
from providers.errors import VideobotError
from providers.media import concat_many, iter_frames, last_frame, probe_video
from storage.jobs import AlreadyFinished
from storage.leases import HolderState, holder_state

log = logging.getLogger(__name__)

#: A failed scene is made again this many times more before the story fails.
SCENE_RETRIES = 1
#: How often the story looks at its running scene (progress, an outside cancel, a restart).
WATCH_INTERVAL = 0.25


def scene_request(story: Job, plan: StoryPlan, k: int, start_image: Path | None, *, extend_from: str | None = None) -> VideoRequest:
    p = story.params
    return VideoRequest(
        operation=Operation.EXTEND if extend_from else Operation.GENERATE, prompt=plan.prompt(k), seconds=p.seconds,
        size=p.size, model=p.model, seed=(p.seed + k) % 2**31, input_image=start_image, source_remote_id=extend_from,
    )  # fmt: skip


class StoryFailed(VideobotError):
    code = "story_failed"


class StoryDriver:
    """The runner step of a story job: scenes in order, then the join (see the module doc)."""

    def __init__(self, runner: JobContext) -> None:
        self.runner = runner

    async def drive(self, story: Job) -> Job:
        """From any unfinished state to DELIVERING (the runner delivers the joined video)."""
        r = self.runner
        # The story only waits on its scenes: it must not hold a running slot a scene needs.
        r.release_slot(story.id)
        if story.status is JobStatus.QUEUED:
            story = await r.write(story, status=JobStatus.RUNNING, started_at=time.time())
            r.emit(EventKind.STARTED, story)
        elif story.status is not JobStatus.RUNNING:
            story = await r.write(story, status=JobStatus.RUNNING)
        plan = StoryPlan.model_validate(story.state["plan"])
        done: list[Job] = []
        try:
            for k in range(1, len(plan.scenes) + 1):
                scene = await self._reused(story, k) or await self._scene(story, plan, k, done[-1] if done else None)
                done.append(scene)
                story = await r.write(
                    story, progress=min(99, round(100 * k / len(plan.scenes))), cost_actual=_billed(story, done),
                    state={**story.state, "scene_jobs": [j.id for j in done]},
                )  # fmt: skip
            return await self._join(story, done)
        except asyncio.CancelledError:
            if r.cancelling(story.id):
                await self._stop_scenes(story)
            raise

    # --- scenes -------------------------------------------------------------------------------

    async def _reused(self, story: Job, k: int) -> Job | None:
        """Scene k taken from the story this one was made from (redo, add scene): the copy made
        when the story was created. A reused scene is never made here: it was not reserved."""
        scene_id = story.state.get("reuse", {}).get(str(k))
        if not scene_id:
            return None
        scene = await self.runner.store.get(scene_id)
        copy = story.state.get("reuse_files", {}).get(str(k))
        path = Path(copy) if copy else (Path(scene.output_path) if scene is not None and scene.output_path else None)
        if scene is None or path is None or not await asyncio.to_thread(path.exists):
            raise StoryFailed(
                f"Scene {k} was to be taken from the earlier story, but its file is gone; nothing was spent on it. "
                "Redo that scene to make it again.",
                detail=f"reused scene job {scene_id}",
            )
        return scene.model_copy(update={"output_path": str(path)})

    async def _scene(self, story: Job, plan: StoryPlan, k: int, previous: Job | None) -> Job:
        """Scene k finished: found among the story's children, or made (and retried once)."""
        n = len(plan.scenes)
        while True:
            attempts = [c for c in await self.runner.store.children(story.id) if c.state.get("story_scene") == k]
            live = next((c for c in attempts if c.status not in (JobStatus.FAILED, JobStatus.CANCELLED)), None)
            if live is None:
                ended = [c for c in attempts if c.status in (JobStatus.FAILED, JobStatus.CANCELLED)]
                if any(c.status is JobStatus.CANCELLED for c in ended) or len(ended) > SCENE_RETRIES:
                    last = ended[-1]
                    # What the failed attempts billed stays counted on the story.
                    await self.runner.write(story, cost_actual=round((story.cost_actual or 0.0) + _billed(story, ended), 4))
                    kept = f" Scenes 1-{k - 1} are kept." if k > 1 else ""
                    raise StoryFailed(
                        f"Scene {k} of {n} {'was cancelled' if last.status is JobStatus.CANCELLED else 'failed twice'}: "
                        f"{last.error_message or 'no reason given'}.{kept}",
                        detail=f"scene jobs {', '.join(c.id for c in ended)}",
                    )
                live = await self._create_scene(story, plan, k, previous, attempt=len(ended) + 1)
            if live.status is JobStatus.COMPLETED:
                return live
            finished = await self._watch(story, live, k, n)
            if finished.status is JobStatus.COMPLETED:
                return finished
            log.warning("story %s: scene %d (job %s) %s; %s", story.id, k, finished.id, finished.status.value,
                        "trying once more" if finished.status is JobStatus.FAILED else "stopping")  # fmt: skip

    async def _create_scene(self, story: Job, plan: StoryPlan, k: int, previous: Job | None, *, attempt: int) -> Job:
        r = self.runner
        start: Path | None = None
        if k == 1:
            start = Path(story.params.image_path) if story.params.image_path else None
        elif story.state.get("continuity") == "last_frame" and previous is not None and previous.output_path:
            start = await self._start_frame(story, k, Path(previous.output_path))
        extend = story.state.get("continuity") == "extend" and previous is not None and previous.remote_id is not None
        request = scene_request(story, plan, k, start, extend_from=previous.remote_id if extend and previous else None)
        origin = story.origin.model_copy(update={"status_message_id": None, "result_message_id": None})
        state: dict[str, object] = {"story_scene": k, "story_attempt": attempt}
        if extend and previous is not None:
            # The provider continues scene k-1's own video: its answer is scenes 1..k in one file.
            state.update(source_remote_id=previous.remote_id, source_video=previous.output_path, source_provider=previous.provider)
        for key in ("moderation_mode", "blocklist"):
            if key in story.state:
                state[key] = story.state[key]
        scene = Job(
            id=new_job_id(), parent_id=story.id, kind=JobKind.EXTEND if extend else JobKind.GENERATE, origin=origin, prompt=request.prompt,
            params=GenerateParams(seconds=request.seconds, size=request.size, seed=request.seed or 0, model=request.model,
                                  image_path=str(start) if start else None),
            pipeline=story.pipeline, status=JobStatus.QUEUED, created_at=time.time(),
            # Reserved by the story already: the scene row adds nothing to the budgets.
            cost_estimate=0.0, state=state,
        )  # fmt: skip
        owner, seconds = r.lease_for_new()
        scene = await r.store.create(scene, lease_owner=owner, lease_seconds=seconds)
        await r.store.add_event(story.id, f"scene {k} of {len(plan.scenes)}: job {scene.id}" + (f" (attempt {attempt})" if attempt > 1 else ""))
        await r.enqueue(scene)
        return scene

    async def _start_frame(self, story: Job, k: int, previous_video: Path) -> Path:
        """Scene k-1's last frame as scene k's first, written once beside the story."""
        final = self.runner.media.image_path(story.id, f"scene{k}-start.png")
        if not final.exists():
            temp = self.runner.media.temp_for(final)

            def write() -> None:
                last_frame(previous_video).convert("RGB").save(temp, "PNG")

            await asyncio.to_thread(write)
            await asyncio.to_thread(self.runner.media.commit, temp, final)
        return final

    async def _watch(self, story: Job, scene: Job, k: int, n: int) -> Job:
        """Until the scene ends; shows the story's progress meanwhile. A scene nobody drives
        (after a restart) is taken over here unless the runner's adopt loop does it."""
        r = self.runner
        shown = -1
        while True:
            current = await r.store.get(scene.id)
            if current is None:
                raise StoryFailed(f"Scene {k} of {n} disappeared from the store.")
            if current.terminal:
                return current
            if not r.owns(current.id) and self._must_take_over():
                state = holder_state(current.lease_owner, current.lease_until)
                if current.lease_owner == r.owner or state is not HolderState.ALIVE:
                    if current.lease_owner == r.owner or await r.store.claim(current.id, r.owner, r.lease_seconds):
                        await r.enqueue(current.model_copy(update={"lease_owner": r.owner}))
            percent = min(99, ((k - 1) * 100 + current.progress) // n)
            if percent != shown:
                shown = percent
                await r.store.set_progress(story.id, percent, fence=r.owner)
                r.emit(EventKind.PROGRESS, story.model_copy(update={"progress": percent}), progress=percent,
                        message=f"scene {k} of {n}: {current.status.value}")  # fmt: skip
            await asyncio.wait([r.wait(current.id)], timeout=WATCH_INTERVAL)

    def _must_take_over(self) -> bool:
        """Whether this driver takes over a scene nobody drives. A runner that resumes jobs
        (`videobot run`) adopts orphaned scenes itself; two enqueuers of one job could drive it
        twice, so the driver only steps in on a runner without that loop (a one-shot command),
        and never while the runner's start-up adoption is still going on."""
        return self.runner.adopts_orphans is False

    async def _stop_scenes(self, story: Job) -> None:
        """The story was cancelled: the scene in progress stops too, and no further one starts."""
        r = self.runner
        for scene in await r.store.children(story.id):
            if not scene.state.get("story_scene") or scene.terminal:
                continue
            if not await r.cancel(scene.id):
                try:
                    await r.store.update(scene.id, status=JobStatus.CANCELLED, finished_at=time.time(), detail=f"story {story.id} cancelled")
                except AlreadyFinished:
                    pass
        scenes = [s for s in await r.store.children(story.id) if s.state.get("story_scene")]
        try:
            await r.store.update(story.id, cost_actual=_billed(story, scenes))
        except Exception:
            log.warning("story %s: could not settle its cost after cancel", story.id, exc_info=True)

    # --- the join -----------------------------------------------------------------------------

    async def _join(self, story: Job, scenes: list[Job]) -> Job:
        r = self.runner
        r.emit(EventKind.PROGRESS, story.model_copy(update={"progress": 99}), progress=99, message="joining the scenes")
        parts = [Path(s.output_path) for s in scenes if s.output_path]
        if len(parts) != len(scenes):
            raise StoryFailed("A finished scene's file is missing; the story cannot be joined.")
        final = r.media.video_path(story.id)
        # Extended scenes each hold the story so far: the last one is the whole story.
        extended = story.state.get("continuity") == "extend" and all(s.kind is JobKind.EXTEND for s in scenes[1:])
        if not final.exists():
            if extended:
                await asyncio.to_thread(r.media.copy_in, parts[-1], final)
            else:
                temp = r.media.temp_for(final)
                fps = round((await asyncio.to_thread(probe_video, parts[0])).fps) or 24
                transition = story.state.get("transition", "cut")
                await asyncio.to_thread(concat_many, parts, temp, fps=fps, size=parse_size(story.params.size), transition=transition)
                await asyncio.to_thread(probe_video, temp)
                await asyncio.to_thread(r.media.commit, temp, final)
        board = r.media.image_path(story.id, "storyboard.jpg")
        if not board.exists():
            temp = r.media.temp_for(board)
            if extended:
                lengths = [await asyncio.to_thread(lambda p=p: probe_video(p).duration) for p in parts]
                starts = [0.0, *lengths[:-1]]  # scene k starts where scene k-1's file ended
            else:
                starts = [0.0] * len(parts)
            await asyncio.to_thread(write_storyboard, [(final, starts[i]) if extended else (p, 0.0) for i, p in enumerate(parts)], temp)
            await asyncio.to_thread(r.media.commit, temp, board)
        return await r.write(
            story, status=JobStatus.DELIVERING, progress=100, output_path=str(final), thumbnail_path=str(board),
            cost_actual=_billed(story, scenes), detail=f"joined {len(scenes)} scenes",
        )  # fmt: skip


def _billed(story: Job, scenes: list[Job]) -> float:
    """What the story's own scenes cost, as the spend ledger would count each on its own
    (scenes taken from an earlier story were paid for by that story)."""
    total = 0.0
    for s in scenes:
        if s.parent_id != story.id:
            continue
        if s.status is JobStatus.COMPLETED:
            total += s.cost_actual if s.cost_actual is not None else (s.cost_estimate or 0.0)
        elif s.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            total += s.cost_actual if s.cost_actual is not None else (s.state.get("image_step_cost") or 0.0)
    return round(total, 4)



def frame_at(path: Path, seconds: float) -> Image.Image:
    """The first frame at or after `seconds` (the last frame when the video is shorter)."""
    fps = probe_video(path).fps or 24
    wanted = round(seconds * fps)
    image = None
    for i, image in enumerate(iter_frames(path)):
        if i >= wanted:
            break
    if image is None:
        raise StoryFailed("A scene's video has no frames.")
    return image


def write_storyboard(scenes: list[tuple[Path, float]], dest: Path, *, tile_width: int = 320, columns: int = 4) -> Path:
    """A contact sheet of each scene's first frame (a video and the second it starts at),
    numbered, in reading order (JPEG)."""
    frames = [frame_at(p, at).convert("RGB") for p, at in scenes]
    w0, h0 = frames[0].size
    tile_h = max(1, round(tile_width * h0 / w0))
    cols = min(columns, len(frames))
    rows = (len(frames) + cols - 1) // cols
    gap = 6
    sheet = Image.new("RGB", (cols * tile_width + (cols + 1) * gap, rows * tile_h + (rows + 1) * gap), (16, 16, 16))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, frame in enumerate(frames):
        tile = frame.resize((tile_width, tile_h))
        x = gap + (i % cols) * (tile_width + gap)
        y = gap + (i // cols) * (tile_h + gap)
        sheet.paste(tile, (x, y))
        label = str(i + 1)
        draw.rectangle((x, y, x + 22, y + 16), fill=(0, 0, 0))
        draw.text((x + 6, y + 2), label, fill=(255, 255, 255), font=font)
    sheet.save(dest, "JPEG", quality=85)
    return dest

