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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.config import CoreSettings
from bot.core.admission import CONFIRM_SECONDS, KindRule
from bot.core.budget import estimate_job_cost
from bot.core.errors import JobNotFound, JobStateError, NotAllowed
from bot.core.ids import new_seed
from bot.core.models import Actor, CleanText, GenerateParams, GenerateRequest, Job, JobKind, JobStatus, Origin
from bot.core.service import JobService
from bot.core.story_driver import scene_request
from bot.core.story_plan import MIN_SCENES, StoryPlan, StoryPlanner, split_script
from providers.base import Capability, parse_size
from providers.errors import InvalidRequest
from providers.pipeline import Pipeline

log = logging.getLogger(__name__)


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
    if pipeline.video is not None and pipeline.video.continues_source and Capability.EXTEND in caps:
        return "extend"
    return "last_frame" if Capability.IMAGE_TO_VIDEO in caps else "prompt"


async def submit_story(service: JobService, request: StoryRequest, origin: Origin, *, planner: StoryPlanner | None = None) -> Job:
    """Plan, validate, estimate the whole story and reserve it through the spend gate at once."""
    story = await _plan_story(service, request, origin, planner=planner)
    return await service.start(story)


def story_rule(core: CoreSettings) -> KindRule:
    """Admission's rule for stories: the scene count and the total length."""

    def check(story: Job) -> None:
        plan = StoryPlan.model_validate(story.state.get("plan") or {"scenes": ["", ""]})
        _check_length(core, len(plan.scenes), story.params.seconds)

    return check


async def _plan_story(service: JobService, request: StoryRequest, origin: Origin, *, planner: StoryPlanner | None = None) -> Job:
    """The story job, planned, checked and priced, not stored yet (nothing is spent).
    Every check that costs nothing runs before the planner (a paid model) is called."""
    core = service.settings
    door = service.admission
    planner = planner or service.planner
    script = request.script.strip()
    if not script:
        raise InvalidRequest("The story is empty. Give a premise, or scenes separated by new lines or ' | '.")
    door.prompt(script)
    here = await door.rules(origin)
    door.check_where(origin, here)
    pipeline, split = door.chosen_pipeline(request.pipeline, here)
    door.check_allowed(pipeline.name, request.model, here)
    if pipeline.video is None:
        raise InvalidRequest(f"'{pipeline.name}' makes images; a story needs a video pipeline.")
    seconds = request.seconds if request.seconds is not None else here.get("seconds", pipeline.default_seconds)
    size = (request.size or here.get("size") or pipeline.default_size).lower()
    door.check_limits(seconds, size, here)
    parse_size(size)
    _check_length(core, min(planner.scene_count(script, request.scenes), core.story_max_scenes), seconds)
    image = await door.load_image(GenerateRequest(
        prompt=script, image_path=request.image_path, image_bytes=request.image_bytes, image_name=request.image_name,
    ))  # fmt: skip
    if planner.calls_model(script):
        await door.check_before_planning(origin, here)
        door.check_planner_call(origin)
    plan = await planner.plan(script, scenes=request.scenes, max_scenes=core.story_max_scenes)
    _check_length(core, len(plan.scenes), seconds)
    params = GenerateParams(
        seconds=seconds, size=size, seed=request.seed if request.seed is not None else new_seed(), model=request.model,
    )  # fmt: skip
    story = service.new_job(JobKind.STORY, origin, _story_prompt(service, plan, script), params, pipeline.name, parent_id=None)
    if image is not None:
        params.image_path = str(service.media.image_path(story.id, "input.png"))
    story.state = {"plan": plan.model_dump(), "transition": request.transition, "continuity": continuity(pipeline)}
    if split is not None:
        story.state["ab"] = split
    # The whole story at once: every scene's estimate, through the same pricing as a single video.
    story.cost_estimate = _estimate(service, story, plan, pipeline, range(1, len(plan.scenes) + 1))
    if image is not None and params.image_path:
        await asyncio.to_thread(service.media.write_bytes, Path(params.image_path), image)
    return story


def _story_prompt(service: JobService, plan: StoryPlan, script: str) -> str:
    return service.admission.prompt(" | ".join(plan.scenes) if plan.planner in ("script", "edited") else script)


def _check_length(core: CoreSettings, n: int, seconds: int) -> None:
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
            taker = service.admission.taker(pipeline, req)
        scene = story.model_copy(update={"kind": JobKind.GENERATE, "prompt": req.prompt})
        estimate = service.admission.price(estimate_job_cost(taker, req, scene), scene)
        if estimate is None:
            service.admission.require_price(scene)  # refuses an unpriced model unless it is free
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
    story = await _plan_story(service, request, origin, planner=planner)
    return await _offer(service, story)


async def _offer(service: JobService, story: Job) -> StoryPreview:
    token = secrets.token_hex(4)
    await service.store.put_pending(token, story, expires_at=time.time() + CONFIRM_SECONDS)
    return StoryPreview(token=token, story=story, expires_in=CONFIRM_SECONDS)


async def pending_preview(service: JobService, token: str, actor: Actor) -> StoryPreview:
    """The preview behind `token` as it stands (what an Edit form starts from), not answered.
    Only its owner sees it, and only while it waits."""
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
    _check_length(service.settings, len(scenes), story.params.seconds)
    old = StoryPlan.model_validate(story.state["plan"])
    plan = StoryPlan(look=old.look, scenes=[" ".join(s.split()) for s in scenes], planner="edited")
    for k in range(1, len(plan.scenes) + 1):
        service.admission.prompt(plan.prompt(k))
    pipeline = service.registry.get(story.pipeline)
    story = story.model_copy(update={"prompt": _story_prompt(service, plan, story.prompt), "state": {**story.state, "plan": plan.model_dump()}})
    story.cost_estimate = _estimate(service, story, plan, pipeline, range(1, len(plan.scenes) + 1))
    await service.take_pending(token, actor, to="edited")  # once: a second answer to the old preview is refused
    return await _offer(service, story)


async def confirm_story(service: JobService, token: str, actor: Actor, *, origin: Origin | None = None) -> Job:
    """Start a previewed story (re-checked at the spend gate). `origin`: where it is shown now
    (a chat whose preview was private gives the public status message's place); the owner
    and their workspace cannot change."""
    story = await service.take_pending(token, actor, to="confirmed")
    if origin is not None:
        same = (origin.platform, origin.workspace_id, origin.user_id) == (story.origin.platform, story.origin.workspace_id, story.origin.user_id)
        if not same:
            raise NotAllowed("Only the person who asked can confirm this.")
        story = story.model_copy(update={"origin": origin})
    return await service.start(story, confirmed=True)


# --- new stories from a finished (or failed) one ----------------------------------------------------


async def _story_for_reuse(service: JobService, job_id: str, origin: Origin, verb: str, *, admin: bool = False) -> Job:
    story = await service.get_for(job_id, origin, admin=admin)
    if story.kind is not JobKind.STORY:
        raise JobStateError(f"Job {story.id} is not a story; only stories have scenes to {verb}.")
    await service.admission.check_reuse(story, origin, verb, admin=admin)
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
    as they are; the others are made with a new seed. Priced for the scenes made only.

    The reused scenes' files are copied into the new story now: a scene deleted (or expired)
    while the story runs must not be made again unreserved."""
    pipeline = service.registry.get(old.pipeline)
    params = old.params.model_copy(update={"seed": new_seed(), "image_path": None})
    story = service.new_job(JobKind.STORY, origin, _story_prompt(service, plan, old.prompt), params, pipeline.name, parent_id=old.id)
    kept = await _copy_reused(service, story, reuse)
    story.state = {
        "plan": plan.model_dump(), "transition": old.state.get("transition", "cut"), "continuity": old.state.get("continuity"),
        "reuse": {str(k): v for k, v in reuse.items() if k in kept}, "reuse_files": {str(k): p for k, p in kept.items()}, **note,
    }  # fmt: skip
    made = [k for k in range(1, len(plan.scenes) + 1) if k not in kept]
    if 1 in made and old.params.image_path and Path(old.params.image_path).exists():
        # Scene 1 starts from the same picture: a copy of its own (the old story may be deleted).
        story.params.image_path = str(service.media.image_path(story.id, "input.png"))
        data = await asyncio.to_thread(Path(old.params.image_path).read_bytes)
        await asyncio.to_thread(service.media.write_bytes, Path(story.params.image_path), data)
    story.cost_estimate = _estimate(service, story, plan, pipeline, made)
    return await service.start(story)


async def _copy_reused(service: JobService, story: Job, reuse: dict[int, str]) -> dict[int, str]:
    """Scene number → the new story's own copy of that finished scene's file (scenes whose file is
    gone are left out: they are made again, and priced)."""
    kept: dict[int, str] = {}
    for k, scene_id in sorted(reuse.items()):
        scene = await service.store.get(scene_id)
        if scene is None or scene.status is not JobStatus.COMPLETED or not scene.output_path:
            continue
        source = Path(scene.output_path)
        if not await asyncio.to_thread(source.exists):
            continue
        dest = service.media.image_path(story.id, f"scene{k}-reused.mp4")
        await asyncio.to_thread(service.media.copy_in, source, dest)
        kept[k] = str(dest)
    return kept


async def redo_scene(service: JobService, job_id: str, k: int, origin: Origin, *, admin: bool = False) -> Job:
    """A new story: scene k made again from the same start frame (scene k-1's last frame),
    every other finished scene taken as it is, then joined again."""
    old = await _story_for_reuse(service, job_id, origin, "redo a scene of", admin=admin)
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


async def add_scene(service: JobService, job_id: str, prompt: str, origin: Origin, *, admin: bool = False) -> Job:
    """A new story: every scene taken as it is, plus one more continuing from the last frame."""
    old = await _story_for_reuse(service, job_id, origin, "add a scene to", admin=admin)
    if old.status is not JobStatus.COMPLETED:
        raise JobStateError(f"Story {old.id} is {old.status.value}; a scene can be added to a finished story. Try Redo.")
    plan = StoryPlan.model_validate(old.state["plan"])
    text = " ".join(service.admission.prompt(prompt).split())
    _check_length(service.settings, len(plan.scenes) + 1, old.params.seconds)
    scenes = await _scene_jobs(service, old)
    reuse = {j: s.id for j, s in enumerate(scenes, 1) if s is not None}
    bigger = plan.model_copy(update={"scenes": [*plan.scenes, text], "planner": "edited" if plan.planner == "script" else plan.planner})
    service.admission.prompt(bigger.prompt(len(bigger.scenes)))
    return await _new_story(service, old, bigger, origin, reuse=reuse, note={"added_scene": len(bigger.scenes)})


async def reroll_story(service: JobService, job_id: str, origin: Origin, *, admin: bool = False) -> Job:
    """The same script (the same plan, not planned again), every scene made again with new seeds."""
    old = await _story_for_reuse(service, job_id, origin, "re-roll", admin=admin)
    plan = StoryPlan.model_validate(old.state["plan"])
    return await _new_story(service, old, plan, origin, reuse={}, note={})


async def reroll(service: JobService, job_id: str, origin: Origin, *, admin: bool = False) -> Job:
    """Re-roll any job: a story is told again with new seeds, anything else gets a new seed."""
    job = await service.get_for(job_id, origin, admin=admin)
    if job.kind is JobKind.STORY:
        return await reroll_story(service, job.id, origin, admin=admin)
    return await service.reroll(job.id, origin, admin=admin)
