"""Stories: one multi-scene video made of scene jobs run in order, then joined.

A story is a parent job (kind `story`) that holds the plan (`state["plan"]`: the look and
one prompt per scene). Each scene is an ordinary child job (`parent_id` = the story,
`state["story_scene"]` = k) with its own row, events and cost, driven by the same runner.
The story's runner step (`StoryDriver.drive`) creates scene k once scene k-1 has finished,
waits for it, and at the end joins the scenes into one MP4 plus a numbered storyboard.

Crash safety comes from the store, not from memory: scene k is looked up among the story's
children before it is created (one insert per attempt, so a restart finds it and never makes
it again), finished scenes are reused, and the next scene's start frame is a file written
atomically beside the story.

Money: the whole story is estimated and reserved at once when it passes the spend gate (the
story row's cost_estimate is the sum of its scenes'); scene rows count nothing of their own
(the store's cost rules, `storage.spend`), and the story settles to the sum of its scenes' actual costs.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel, ConfigDict, Field

from bot.core.budget import estimate_job_cost
from bot.core.errors import JobNotFound, JobStateError, NotAllowed
from bot.core.ids import new_job_id, new_seed
from bot.core.models import Actor, CleanText, EventKind, GenerateParams, GenerateRequest, Job, JobKind, JobStatus, Origin
from bot.core.story_plan import MIN_SCENES, StoryPlan, StoryPlanner, split_script
from providers.base import Capability, Operation, VideoRequest, parse_size
from providers.errors import InvalidRequest, VideobotError
from providers.media import concat_many, iter_frames, last_frame, probe_video
from providers.openai_videos import OpenAIVideoProvider
from providers.pipeline import Pipeline
from storage.jobs import AlreadyFinished
from storage.leases import HolderState, holder_state

if TYPE_CHECKING:
    from bot.core.runner import Runner
    from bot.core.service import JobService

log = logging.getLogger(__name__)

#: A failed scene is made again this many times more before the story fails.
SCENE_RETRIES = 1
#: How often the story looks at its running scene (progress, an outside cancel, a restart).
WATCH_INTERVAL = 0.25


class StoryRequest(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    script: CleanText
    scenes: int | None = None
    #: Seconds per scene.
    seconds: int | None = None
    pipeline: str | None = None
    model: str | None = None
    size: str | None = None
    seed: int | None = None
    transition: Literal["cut", "fade"] = "cut"
    image_path: Path | None = None
    image_bytes: bytes | None = Field(default=None, repr=False)
    image_name: str | None = None


def continuity(pipeline: Pipeline) -> str:
    """How scene k > 1 continues scene k-1: "extend" on the OpenAI Videos protocol (its
    extension continues the motion of the source video and returns source + new seconds),
    "last_frame" where the pipeline animates an image (scene k-1's last frame is scene k's
    first), else "prompt" (only the shared look holds the scenes together)."""
    caps = pipeline.capabilities
    if isinstance(pipeline.video, OpenAIVideoProvider) and Capability.EXTEND in caps:
        return "extend"
    return "last_frame" if Capability.IMAGE_TO_VIDEO in caps else "prompt"


def scene_request(story: Job, plan: StoryPlan, k: int, start_image: Path | None, *, extend_from: str | None = None) -> VideoRequest:
    p = story.params
    return VideoRequest(
        operation=Operation.EXTEND if extend_from else Operation.GENERATE, prompt=plan.prompt(k), seconds=p.seconds,
        size=p.size, model=p.model, seed=(p.seed + k) % 2**31, input_image=start_image, source_remote_id=extend_from,
    )  # fmt: skip


async def submit_story(service: JobService, request: StoryRequest, origin: Origin, *, planner: StoryPlanner | None = None) -> Job:
    """Plan, validate, estimate the whole story and reserve it through the spend gate at once."""
    story, pipeline = await _plan_story(service, request, origin, planner=planner)
    return await service._persist(story, pipeline)


async def _plan_story(service: JobService, request: StoryRequest, origin: Origin, *, planner: StoryPlanner | None = None) -> tuple[Job, Pipeline]:
    """The story job, planned, checked and priced, not stored yet (nothing is spent)."""
    core = service.settings
    planner = planner or getattr(service, "story_planner", None) or StoryPlanner.from_env()
    script = request.script.strip()
    if not script:
        raise InvalidRequest("The story is empty. Give a premise, or scenes separated by new lines or ' | '.")
    here = await service.tenant_settings.effective(origin)
    service._check_where(origin, here)
    default = here.get("default_pipeline") if here.source("default_pipeline") != "env" else None
    name, split = service._pick_pipeline(request.pipeline or default or service.default_pipeline(image=False))
    pipeline = service.registry.get(name)
    service._check_allowed(pipeline.name, request.model, here)
    if pipeline.video is None:
        raise InvalidRequest(f"'{pipeline.name}' makes images; a story needs a video pipeline.")
    plan = await planner.plan(script, scenes=request.scenes, max_scenes=core.story_max_scenes)
    seconds = request.seconds if request.seconds is not None else here.get("seconds", pipeline.default_seconds)
    size = (request.size or here.get("size") or pipeline.default_size).lower()
    service._check_limits(seconds, size, here)
    parse_size(size)
    _check_length(service, len(plan.scenes), seconds)
    image = await service._load_image(GenerateRequest(
        prompt=script, image_path=request.image_path, image_bytes=request.image_bytes, image_name=request.image_name,
    ))  # fmt: skip
    params = GenerateParams(
        seconds=seconds, size=size, seed=request.seed if request.seed is not None else new_seed(), model=request.model,
    )  # fmt: skip
    story = service._new_job(JobKind.STORY, origin, _story_prompt(service, plan, script), params, pipeline.name, parent_id=None)
    if image is not None:
        params.image_path = str(service.media.image_path(story.id, "input.png"))
    story.state = {"plan": plan.model_dump(), "transition": request.transition, "continuity": continuity(pipeline)}
    if split is not None:
        story.state["ab"] = split
    # The whole story at once: every scene's estimate, through the same pricing as a single video.
    story.cost_estimate = _estimate(service, story, plan, pipeline, range(1, len(plan.scenes) + 1))
    if image is not None and params.image_path:
        await asyncio.to_thread(service.media.write_bytes, Path(params.image_path), image)
    return story, pipeline


def _story_prompt(service: JobService, plan: StoryPlan, script: str) -> str:
    return service._check_prompt(" | ".join(plan.scenes) if plan.planner in ("script", "edited") else script)


def _check_length(service: JobService, n: int, seconds: int) -> None:
    core = service.settings
    if n > core.story_max_scenes:
        raise InvalidRequest(f"A story has at most {core.story_max_scenes} scenes; this one would have {n}.")
    if seconds * n > core.story_max_seconds:
        raise InvalidRequest(
            f"{n} scenes of {seconds} s make {seconds * n} s; a story is at most {core.story_max_seconds} s. "
            f"Ask for fewer scenes or --seconds {max(1, core.story_max_seconds // n)}."
        )


def _estimate(service: JobService, story: Job, plan: StoryPlan, pipeline: Pipeline, scenes: Iterable[int]) -> float:
    """What making `scenes` (numbers, 1-based) of the story costs, priced like single videos.
    The first scene priced is validated against the pipeline (or the fallback that takes it)."""
    how = story.state.get("continuity")
    total, taker = 0.0, None
    for k in scenes:
        image = story.params.image_path
        start = Path(image) if k == 1 and image else (Path("start.png") if k > 1 and how == "last_frame" else None)
        req = scene_request(story, plan, k, start, extend_from="(scene before)" if k > 1 and how == "extend" else None)
        if taker is None:
            taker = service._validating_pipeline(pipeline, req)
        scene = story.model_copy(update={"kind": JobKind.GENERATE, "prompt": req.prompt})
        estimate = service._priced(estimate_job_cost(taker, req, scene), scene)
        if estimate is None:
            service._check_priced(scene)  # refuses an unpriced model unless it is free
            estimate = 0.0
        total += estimate
    return round(total, 4)


# --- the plan shown before spending (chat) ------------------------------------------------------


class StoryPreview(BaseModel):
    """A planned story waiting for its owner: Confirm starts it (through the spend gate), Edit
    replaces its scenes (a new token), Cancel drops it. Kept in the store's pending spends, so
    who may answer and for how long is the service's rule, as for any confirm offer."""

    token: str
    story: Job
    expires_in: float

    @property
    def plan(self) -> StoryPlan:
        return StoryPlan.model_validate(self.story.state["plan"])

    @property
    def estimate(self) -> float:
        return self.story.cost_estimate or 0.0

    def headline(self) -> str:
        p, n = self.story.params, len(self.plan.scenes)
        return f"Story preview: {n} scenes of {p.seconds} s ({n * p.seconds} s) on {self.story.pipeline}, {p.size}"

    def scene_lines(self) -> list[str]:
        return [f"{k}. {scene}" for k, scene in enumerate(self.plan.scenes, 1)]

    def estimate_line(self) -> str:
        minutes = max(1, round(self.expires_in / 60))
        return f"Estimate: ${self.estimate:.2f} · nothing is spent until you confirm (this preview lasts {minutes} minutes)"

    def text(self) -> str:
        """The preview in plain text (what a text-only chat shows, with the commands that answer it)."""
        plan = self.plan
        lines = [self.headline()]
        if plan.look:
            lines.append(f"Look: {plan.look}")
        lines += [*self.scene_lines(), self.estimate_line(), f"Start it: confirm {self.token} · drop it: decline {self.token}"]
        return "\n".join(lines)


async def preview_story(service: JobService, request: StoryRequest, origin: Origin, *, planner: StoryPlanner | None = None) -> StoryPreview:
    """Plan and price the story, and keep it for its owner's answer; nothing is queued or reserved."""
    story, _ = await _plan_story(service, request, origin, planner=planner)
    return await _offer(service, story)


async def _offer(service: JobService, story: Job) -> StoryPreview:
    from bot.core.service import CONFIRM_SECONDS

    token = secrets.token_hex(4)
    await service.store.put_pending(token, story, expires_at=time.time() + CONFIRM_SECONDS)
    return StoryPreview(token=token, story=story, expires_in=CONFIRM_SECONDS)


async def pending_preview(service: JobService, token: str, actor: Actor) -> StoryPreview:
    """The preview behind `token` as it stands (what an Edit form starts from), not answered.
    Only its owner sees it, and only while it waits."""
    from bot.core.service import CONFIRM_SECONDS

    key = token.strip().lower()
    pending = await service.store.peek_pending(key)
    if pending is None or pending.platform != (actor.platform or "cli"):
        raise JobNotFound(token)
    if pending.user_id != actor.user_id:
        raise NotAllowed("Only the person who asked can change this.")
    state, expires_at = pending.state, pending.expires_at
    if state != "pending" or expires_at < time.time():
        why = "expired" if state == "pending" else state
        raise JobStateError(f"That preview was already {why}. Ask again with /story.")
    story = pending.job
    if story.kind is not JobKind.STORY:
        raise JobStateError("That offer is not a story; there are no scenes to edit.")
    return StoryPreview(token=key, story=story, expires_in=min(CONFIRM_SECONDS, max(0.0, expires_at - time.time())))


async def edit_preview(service: JobService, token: str, scenes_text: str, actor: Actor) -> StoryPreview:
    """The preview with its scenes replaced (one per line, or separated by ' | '); the old
    token is spent and a new one offered. The look stays; limits and price are checked again,
    before the old token is spent (a slip leaves the preview as it was)."""
    story = (await pending_preview(service, token, actor)).story
    scenes = split_script(scenes_text)
    if len(scenes) < MIN_SCENES:
        raise InvalidRequest(f"A story has at least {MIN_SCENES} scenes: write one scene per line.")
    _check_length(service, len(scenes), story.params.seconds)
    old = StoryPlan.model_validate(story.state["plan"])
    plan = StoryPlan(look=old.look, scenes=[" ".join(s.split()) for s in scenes], planner="edited")
    for k in range(1, len(plan.scenes) + 1):
        service._check_prompt(plan.prompt(k))
    pipeline = service.registry.get(story.pipeline)
    story = story.model_copy(update={"prompt": _story_prompt(service, plan, story.prompt), "state": {**story.state, "plan": plan.model_dump()}})
    story.cost_estimate = _estimate(service, story, plan, pipeline, range(1, len(plan.scenes) + 1))
    await service._take_pending(token, actor, to="edited")  # once: a second answer to the old preview is refused
    return await _offer(service, story)


async def confirm_story(service: JobService, token: str, actor: Actor, *, origin: Origin | None = None) -> Job:
    """Start a previewed story (re-checked at the spend gate). `origin`: where it is shown now
    (a chat whose preview was private gives the public status message's place); the owner
    and their workspace cannot change."""
    story, _ = await service._take_pending(token, actor, to="confirmed")
    if origin is not None:
        same = (origin.platform, origin.workspace_id, origin.user_id) == (story.origin.platform, story.origin.workspace_id, story.origin.user_id)
        if not same:
            raise NotAllowed("Only the person who asked can confirm this.")
        story = story.model_copy(update={"origin": origin})
    return await service._persist(story, service.registry.get(story.pipeline), confirmed=True)


# --- new stories from a finished (or failed) one ----------------------------------------------------


async def _story_for_reuse(service: JobService, job_id: str, origin: Origin, verb: str) -> Job:
    story = await service.get_for(job_id, origin)
    if story.kind is not JobKind.STORY:
        raise JobStateError(f"Job {story.id} is not a story; only stories have scenes to {verb}.")
    await service._check_may_reuse(story, origin, verb)
    if story.deleted_at is not None:
        raise JobStateError(f"Job {story.id} was deleted.")
    if story.media_expired_at is not None:
        raise JobStateError(f"Job {story.id}'s files were removed. Tell the story again with /story.")
    return story


async def _scene_jobs(service: JobService, story: Job) -> list[Job | None]:
    """The story's finished scenes in order (None where a scene has no finished file)."""
    found: list[Job | None] = []
    for scene_id in story.state.get("scene_jobs", []):
        job = await service.store.get(scene_id)
        ok = job is not None and job.status is JobStatus.COMPLETED and job.output_path and Path(job.output_path).exists()
        found.append(job if ok else None)
    return found


async def _new_story(
    service: JobService, old: Job, plan: StoryPlan, origin: Origin, *, reuse: dict[int, str], note: dict[str, object]
) -> Job:
    """A story made again from `old`: `reuse` maps scene numbers to finished scene jobs taken
    as they are; the others are made with a new seed. Priced for the scenes made only."""
    pipeline = service.registry.get(old.pipeline)
    params = old.params.model_copy(update={"seed": new_seed(), "image_path": None})
    story = service._new_job(JobKind.STORY, origin, _story_prompt(service, plan, old.prompt), params, pipeline.name, parent_id=old.id)
    story.state = {
        "plan": plan.model_dump(), "transition": old.state.get("transition", "cut"), "continuity": old.state.get("continuity"),
        "reuse": {str(k): v for k, v in reuse.items()}, **note,
    }  # fmt: skip
    made = [k for k in range(1, len(plan.scenes) + 1) if k not in reuse]
    if 1 in made and old.params.image_path and Path(old.params.image_path).exists():
        # Scene 1 starts from the same picture: a copy of its own (the old story may be deleted).
        story.params.image_path = str(service.media.image_path(story.id, "input.png"))
        data = await asyncio.to_thread(Path(old.params.image_path).read_bytes)
        await asyncio.to_thread(service.media.write_bytes, Path(story.params.image_path), data)
    story.cost_estimate = _estimate(service, story, plan, pipeline, made)
    return await service._persist(story, pipeline)


async def redo_scene(service: JobService, job_id: str, k: int, origin: Origin) -> Job:
    """A new story: scene k made again from the same start frame (scene k-1's last frame),
    every other finished scene taken as it is, then joined again."""
    old = await _story_for_reuse(service, job_id, origin, "redo a scene of")
    if old.status not in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
        raise JobStateError(f"Story {old.id} is still {old.status.value}; redo a scene once it has ended.")
    plan = StoryPlan.model_validate(old.state["plan"])
    if not 1 <= k <= len(plan.scenes):
        raise InvalidRequest(f"Story {old.id} has scenes 1 to {len(plan.scenes)}; there is no scene {k}.")
    scenes = await _scene_jobs(service, old)
    # An extension holds every scene before it: the scenes after k are extended again from the new one.
    last = k - 1 if old.state.get("continuity") == "extend" else len(plan.scenes)
    reuse = {j: s.id for j, s in enumerate(scenes, 1) if s is not None and j != k and j <= last}
    return await _new_story(service, old, plan, origin, reuse=reuse, note={"redo_scene": k})


async def add_scene(service: JobService, job_id: str, prompt: str, origin: Origin) -> Job:
    """A new story: every scene taken as it is, plus one more continuing from the last frame."""
    old = await _story_for_reuse(service, job_id, origin, "add a scene to")
    if old.status is not JobStatus.COMPLETED:
        raise JobStateError(f"Story {old.id} is {old.status.value}; a scene can be added to a finished story. Try Redo.")
    plan = StoryPlan.model_validate(old.state["plan"])
    text = " ".join(service._check_prompt(prompt).split())
    _check_length(service, len(plan.scenes) + 1, old.params.seconds)
    scenes = await _scene_jobs(service, old)
    reuse = {j: s.id for j, s in enumerate(scenes, 1) if s is not None}
    bigger = plan.model_copy(update={"scenes": [*plan.scenes, text], "planner": "edited" if plan.planner == "script" else plan.planner})
    service._check_prompt(bigger.prompt(len(bigger.scenes)))
    return await _new_story(service, old, bigger, origin, reuse=reuse, note={"added_scene": len(bigger.scenes)})


async def reroll_story(service: JobService, job_id: str, origin: Origin) -> Job:
    """The same script (the same plan, not planned again), every scene made again with new seeds."""
    old = await _story_for_reuse(service, job_id, origin, "re-roll")
    plan = StoryPlan.model_validate(old.state["plan"])
    return await _new_story(service, old, plan, origin, reuse={}, note={})


class StoryFailed(VideobotError):
    code = "story_failed"


class StoryDriver:
    """The runner step of a story job: scenes in order, then the join (see the module doc)."""

    def __init__(self, runner: Runner) -> None:
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
        """Scene k taken from the story this one was made from (redo, add scene), while its file
        is there; else None and the scene is made."""
        scene_id = story.state.get("reuse", {}).get(str(k))
        if not scene_id:
            return None
        scene = await self.runner.store.get(scene_id)
        if scene is None or scene.status is not JobStatus.COMPLETED or not scene.output_path:
            return None
        return scene if await asyncio.to_thread(Path(scene.output_path).exists) else None

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

