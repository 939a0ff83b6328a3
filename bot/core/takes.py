"""Takes: what can be done with a set of takes (see bot/core/take_set.py for what a set is).

- `--takes N` on a video or image request makes a set (`JobService.submit`); admission checks N
  against VIDEOBOT_MAX_TAKES (`takes_rule`) and prices all N takes at once.
- Use N posts take N alone as a normal result (its usual buttons); nothing is generated or spent.
- More like N makes a new set starting from take N: its first frame where the pipeline animates
  an image, else its seed (the next seeds) and its prompt.
- Re-roll all makes the set again with new seeds.

Every new set passes admission like a typed command (bot.core.admission).
"""
from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from bot.config import CoreSettings
from bot.core.admission import KindRule
from bot.core.errors import JobStateError, NotAllowed
from bot.core.ids import new_seed
from bot.core.models import Job, JobKind, JobStatus, Origin, Tenant
from bot.core.service import JobService
from bot.core.stories import reroll as reroll_story_or_job
from bot.core.take_set import MOST_TAKES, TAKE, USED, as_set, take_kind, take_seeds, takes_count
from providers.base import Capability
from providers.errors import InvalidRequest
from providers.media import first_frame
from storage.jobs import AlreadyFinished


def takes_rule(core: CoreSettings) -> KindRule:
    """Admission's rule for a set: 1 to VIDEOBOT_MAX_TAKES takes (at most four)."""

    def check(job: Job) -> None:
        most = min(MOST_TAKES, core.max_takes)
        n = takes_count(job)
        if n < 1:
            raise InvalidRequest("Ask for at least one take: --takes 1 to --takes 4.")
        if n > most:
            raise InvalidRequest(f"A request makes at most {most} takes here; ask for --takes {most} or fewer.")

    return check


async def _set_for(service: JobService, job_id: str, origin: Origin, verb: str, *, admin: bool) -> Job:
    job = await service.get_for(job_id, origin, admin=admin)
    if job.kind is not JobKind.TAKES:
        raise JobStateError(f"Job {job.id} is not a set of takes; only a set has takes to {verb}.")
    await service.admission.check_reuse(job, origin, verb, admin=admin)
    if job.deleted_at is not None:
        raise JobStateError(f"Job {job.id} was deleted.")
    if job.media_expired_at is not None:
        raise JobStateError(f"Job {job.id}'s files were removed. Ask again with /video … --takes {takes_count(job)}.")
    return job


async def _take(service: JobService, set_job: Job, n: int) -> Job:
    """Take n of the set, finished, with its file on disk."""
    count = takes_count(set_job)
    if not 1 <= n <= count:
        raise InvalidRequest(f"Set {set_job.id} has takes 1 to {count}; there is no take {n}.")
    take = next((c for c in await service.store.children(set_job.id) if c.state.get(TAKE) == n), None)
    # Delivering counts as finished: its file is made (a take being posted alone by Use N is one).
    if take is None or take.status not in (JobStatus.COMPLETED, JobStatus.DELIVERING) or not take.output_path:
        state = take.status.value if take is not None else "not started"
        raise JobStateError(f"Take {n} of set {set_job.id} has no finished file (it is {state}).")
    if not await asyncio.to_thread(Path(take.output_path).exists):
        raise JobStateError(f"Take {n} of set {set_job.id}: its file is gone from disk.")
    return take


async def use_take(service: JobService, job_id: str, n: int, origin: Origin, *, admin: bool = False) -> Job:
    """Take n posted alone as a normal result (with its own buttons). Free: nothing is generated;
    the take's own row goes back to `delivering` once and the runner posts it."""
    set_job = await _set_for(service, job_id, origin, "use a take of", admin=admin)
    if Tenant.of(origin) is not None and origin.user_id != set_job.origin.user_id:
        # Posting a take alone is its owner's choice (it is free); anyone else makes their own with More like.
        raise NotAllowed(f"Only the person who asked for set {set_job.id} can use its takes; More like {n} makes new ones of your own.")
    take = await _take(service, set_job, n)
    if take.state.get(USED):
        raise JobStateError(f"Take {n} of set {set_job.id} is already posted on its own (job {take.id}).")
    # Shown where the Use came from when that is the set's conversation (a chat's new status message,
    # its thread); else where the set is.
    fields: dict[str, Any] = {}
    here = origin.platform == take.origin.platform and origin.channel_id == take.origin.channel_id
    if here and Tenant.of(origin) is not None:
        fields["origin_extra"] = {**take.origin.extra, **origin.extra}
        if origin.status_message_id:
            fields["status_message_id"] = origin.status_message_id
    # Marked used before it is reopened: a second Use finds the mark (the reopen happens once).
    await service.store.update(take.id, state={**take.state, USED: True}, error_code="undelivered", detail=f"use take {n}", **fields)
    try:
        take = await service.store.reopen_delivery(take.id, f"take {n} of set {set_job.id} used on its own")
    except AlreadyFinished:
        raise JobStateError(f"Take {n} of set {set_job.id} is already posted on its own (job {take.id}).") from None
    runner = service.runner
    if runner is not None and take.origin.platform in runner.platforms:
        await runner.enqueue(take)
    else:
        try:  # another process delivers it (a gateway's workers)
            await service.store.publish(take.id, "queued", {})
        except Exception:
            pass
    return take


async def more_like(service: JobService, job_id: str, n: int, origin: Origin, *, admin: bool = False) -> Job:
    """A new set of as many takes, starting from take n: its first frame on a pipeline that
    animates an image, else its seed (the seeds after it) and its prompt."""
    set_job = await _set_for(service, job_id, origin, "make more like a take of", admin=admin)
    take = await _take(service, set_job, n)
    count = takes_count(set_job)
    pipeline = service.registry.get(set_job.pipeline)
    kind = take_kind(set_job)
    params = set_job.params.model_copy(update={"image_path": None})
    image: bytes | None = None
    if kind is not JobKind.IMAGE and Capability.IMAGE_TO_VIDEO in pipeline.capabilities:
        image = await asyncio.to_thread(_first_frame_png, Path(take.output_path or ""))
        params.seed = new_seed()
        seeds = take_seeds(params.seed, count)
        how = "first frame"
    else:
        seeds = take_seeds(take.params.seed + 1, count)
        params.seed = seeds[0]
        how = "seed"
    job = service.new_job(kind, origin, set_job.prompt, params, pipeline.name, parent_id=set_job.id)
    if image is not None:
        job.params.image_path = str(service.media.image_path(job.id, "input.png"))
    job = as_set(job, count, seeds=seeds)
    job.state["more_like"] = {"set": set_job.id, "take": n, "from": how}
    return await service.start(job, image=image)


async def reroll_set(service: JobService, job_id: str, origin: Origin, *, admin: bool = False) -> Job:
    """The set made again: as many takes, the same prompt and settings, new seeds."""
    set_job = await _set_for(service, job_id, origin, "re-roll", admin=admin)
    params = set_job.params.model_copy(update={"seed": new_seed(), "image_path": None})
    job = service.new_job(take_kind(set_job), origin, set_job.prompt, params, set_job.pipeline, parent_id=set_job.id)
    image = None
    if set_job.params.image_path and await asyncio.to_thread(Path(set_job.params.image_path).exists):
        image = await asyncio.to_thread(Path(set_job.params.image_path).read_bytes)
        job.params.image_path = str(service.media.image_path(job.id, "input.png"))
    job.params.options = dict(set_job.params.options)
    return await service.start(as_set(job, takes_count(set_job)), image=image)


async def reroll(service: JobService, job_id: str, origin: Origin, *, admin: bool = False) -> Job:
    """Re-roll any job: a set makes all its takes again, a story is told again, anything else gets a new seed."""
    job = await service.get_for(job_id, origin, admin=admin)
    if job.kind is JobKind.TAKES:
        return await reroll_set(service, job.id, origin, admin=admin)
    return await reroll_story_or_job(service, job.id, origin, admin=admin)


def _first_frame_png(path: Path) -> bytes:
    out = io.BytesIO()
    first_frame(path).convert("RGB").save(out, "PNG")
    return out.getvalue()


async def take_rows(service: JobService, set_job: Job) -> list[dict[str, Any]]:
    """Each take of a set as `videobot show --json` lists it: number, job, seed, status, file, error."""
    seeds: list[int] = set_job.state.get("seeds") or []
    found = {int(c.state[TAKE]): c for c in await service.store.children(set_job.id) if c.state.get(TAKE)}
    rows = []
    for k in range(1, takes_count(set_job) + 1):
        take = found.get(k)
        rows.append({
            "take": k, "job_id": take.id if take else None, "seed": take.params.seed if take else (seeds[k - 1] if k <= len(seeds) else None),
            "status": take.status.value if take else "queued", "progress": take.progress if take else 0,
            "file": take.output_path if take else None, "error": take.error_message if take else None,
            "used": bool(take and take.state.get(USED)),
        })  # fmt: skip
    return rows


