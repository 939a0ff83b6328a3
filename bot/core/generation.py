"""One generation: a video (or image) job from QUEUED to DELIVERING through one provider.

submitting → running → downloading, every transition written (fenced on the runner's lease)
before the next step acts, so a restarted runner continues where this stopped: moderation before
any paid step, the image step of a chain, the create (its intent written first), the remote job
polled by the shared engine, the file downloaded, probed and committed. A pipeline that is
unavailable hands the job to its fallback through admission's hop gate; a failure the provider
calls its own is retried once. The driver sees the runner only as a `JobContext`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from bot.core.budget import BudgetGuard
from bot.core.context import JobContext
from bot.core.errors import Flagged, MediaMissing, ModerationUnavailable
from bot.core.models import EventKind, Job, JobKind, JobStatus
from bot.core.requests import video_request_for
from providers.base import ImageRequest, RemoteJob, VideoRequest
from providers.errors import GenerationFailed, NotConfigured, RateLimited, Unavailable
from providers.media import probe_video, write_thumbnail
from providers.moderation import BlocklistModerator, Moderator
from providers.pipeline import Pipeline
from providers.polling import backoff_delay, retrying, wait_for_completion
from providers.registry import PipelineRegistry
from storage.contract import Store
from storage.spend import OverBudget, SpendLimit

log = logging.getLogger(__name__)

#: Progress ticks are written to the job row at most this often (events carry every tick).
PROGRESS_WRITE_INTERVAL = 2.0
#: What the status message says while a create waits out the provider's rate limit.
RATE_LIMIT_NOTE = "waiting for the provider's rate limit"


class AmbiguousSubmit(Exception):
    """A create may have reached the provider, which cannot tell: it is not sent again."""


class HopGate(Protocol):
    """Admission's part in a fallback hop or a retry (bot.core.admission.Admission implements it)."""

    async def admit_hop(self, job: Job, fallback: str) -> float | None: ...

    async def hop_limits(self, job: Job) -> list[SpendLimit]: ...


class Generation:
    def __init__(
        self, ctx: JobContext, registry: PipelineRegistry, moderator: Moderator | None, moderation_on_outage: str, hops: HopGate | None
    ) -> None:
        self.ctx = ctx
        self.registry = registry
        self.moderator = moderator
        self.moderation_on_outage = moderation_on_outage
        self.hops = hops
        self.store = ctx.store
        self.media = ctx.media
        self.poll_policy = ctx.poll_policy

    async def drive(self, job: Job) -> Job:
        while job.status not in (JobStatus.DELIVERING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
            if job.status in (JobStatus.QUEUED, JobStatus.SUBMITTING):
                job = await self._submit(job)
            elif job.status is JobStatus.RUNNING:
                job = await self._wait_remote(job)
            elif job.status is JobStatus.DOWNLOADING:
                job = await self._download(job)
        return job

    async def _write(self, job: Job, *, detail: str | None = None, **fields: Any) -> Job:
        return await self.ctx.write(job, detail=detail, **fields)

    def _emit(self, kind: EventKind, job: Job, *, progress: int | None = None, message: str | None = None) -> None:
        self.ctx.emit(kind, job, progress=progress, message=message)

    async def _submit(self, job: Job) -> Job:
        pipeline = self.registry.get(job.pipeline)
        if job.status is JobStatus.QUEUED:
            job = await self._write(job, status=JobStatus.SUBMITTING, started_at=time.time())
            self._emit(EventKind.STARTED, job)
        if not job.state.get("moderated") and (self.moderator is not None or job.state.get("blocklist")):
            job = await self._moderate(job)
        if job.kind is JobKind.IMAGE:
            return await self._run_image_job(job, pipeline)
        try:
            return await self._submit_video(job, pipeline)
        except Unavailable as exc:
            if (fallback := self._next_fallback(job, pipeline)) is None:
                raise
            return await self._take_fallback(job, fallback, exc)

    async def _moderate(self, job: Job) -> Job:
        """Before any paid step: the prompt and any input image. A flagged job ends here, having
        cost nothing; a moderation outage refuses paid work (or lets it pass, per setting)."""
        images = [Path(p) for p in (job.params.image_path, job.state.get("source_image")) if p and Path(p).exists()]
        if job.state.get("blocklist"):
            # The tenant's own words apply in every mode.
            local = await BlocklistModerator(job.state["blocklist"]).check(job.prompt)
            if local.flagged:
                raise Flagged(local.categories, "tenant blocklist")
        if self.moderator is None or job.state.get("moderation_mode") == "off":
            return await self._write(job, state={**job.state, "moderated": "blocklist" if job.state.get("blocklist") else "off"})
        try:
            verdict = await self.moderator.check(job.prompt, images)
        except Unavailable as exc:
            free = (job.cost_estimate or 0.0) == 0.0
            open_ = self.moderation_on_outage == "open" or (self.moderation_on_outage == "auto" and free)
            if not open_:
                raise ModerationUnavailable(
                    "The safety check is not answering, so nothing was sent or spent. Try again in a few minutes.",
                    detail=exc.detail or str(exc),
                ) from exc
            log.warning("job %s: moderation unavailable, going on (free job or fail-open): %s", job.id, exc.detail or exc)
            return await self._write(job, state={**job.state, "moderated": "skipped"}, detail="moderation unavailable; went on")
        if verdict.flagged:
            raise Flagged(verdict.categories, verdict.source)
        # Recorded in the job's state (no history line: a pass is the normal case).
        return await self._write(job, state={**job.state, "moderated": verdict.source})

    async def _submit_video(self, job: Job, pipeline: Pipeline) -> Job:
        assert pipeline.video is not None
        provider = pipeline.video
        if not pipeline.configured:
            # Before the image step: nothing is paid for on a pipeline that cannot finish the job.
            raise NotConfigured(f"The '{pipeline.name}' pipeline is not configured.", provider=pipeline.name,
                                detail=pipeline.not_configured_reason)  # fmt: skip
        if job.state.get("submit_sent_to") == provider.name and job.remote_id is None:
            return await self._resolve_ambiguous_submit(job, pipeline)
        request = video_request_for(job)
        self._check_sources(request)
        if pipeline.uses_image_step(request):
            image_path, job = await self._image_step(job, pipeline, request)
            request = request.model_copy(update={"input_image": image_path})
        provider.validate(request)
        estimate = provider.estimate_cost(request)
        if estimate is not None and job.state.get("image_step_cost"):
            estimate = round(estimate + job.state["image_step_cost"], 4)
        job = await self._write(
            job,
            provider=provider.name,
            model=request.model or provider.default_model,
            cost_estimate=estimate if estimate is not None else job.cost_estimate,
        )
        attempt = 0
        while True:
            # Written before the create call: after a crash we know a create may have been sent, and when.
            job = await self._write(job, state={**job.state, "submit_sent_to": provider.name, "submit_sent_at": time.time()})
            try:
                remote = await provider.submit(request)
            except RateLimited as exc:
                # A 429 on a create proves nothing was accepted: nothing billed, safe to send again.
                attempt += 1
                state = {k: v for k, v in job.state.items() if k != "submit_sent_to"}
                job = await self._write(job, state=state, detail=f"rate limited by {provider.name}; will retry" if attempt == 1 else None)
                await self._wait_out_rate_limit(job, exc, attempt)
                continue
            return await self._accept_remote(job, remote)

    def _check_sources(self, request: VideoRequest) -> None:
        """The files the job starts from must be here: a worker without the shared media volume
        says so instead of failing somewhere in a provider (or making something else)."""
        for what, path in (("source video", request.source_video), ("input image", request.input_image)):
            if path is not None and not path.exists():
                shown = path.relative_to(self.media.root).as_posix() if path.is_relative_to(self.media.root) else str(path)
                raise MediaMissing(what, shown, str(path))

    async def _wait_out_rate_limit(self, job: Job, exc: RateLimited, attempt: int) -> None:
        """Wait as long as the provider asks (or back off), within the job's own deadline."""
        delay = backoff_delay(attempt, self.poll_policy, exc.retry_after)
        deadline = (job.started_at or job.created_at) + self.poll_policy.timeout
        if time.time() + delay > deadline:
            raise exc
        log.info("job %s: rate limited (retry after %s), waiting %.1fs", job.id, exc.retry_after, delay)
        self._emit(EventKind.PROGRESS, job, message=RATE_LIMIT_NOTE)
        await asyncio.sleep(delay)

    async def _rate_limited(self, job: Job, call: Callable[[], Awaitable[Any]]) -> Any:
        """A paid call that a 429 refused without doing anything: repeat it after the wait."""
        attempt = 0
        while True:
            try:
                return await call()
            except RateLimited as exc:
                attempt += 1
                await self._wait_out_rate_limit(job, exc, attempt)

    async def _accept_remote(self, job: Job, remote: RemoteJob) -> Job:
        job = await self._write(
            job,
            remote_id=remote.id,
            model=remote.model or job.model,
            status=JobStatus.RUNNING,
            progress=remote.progress,
            state={**job.state, "remote_since": time.time()},
            detail=f"remote {remote.id}",
        )
        self._emit(EventKind.PROGRESS, job, progress=remote.progress, message=remote.note)
        return job

    async def _resolve_ambiguous_submit(self, job: Job, pipeline: Pipeline) -> Job:
        """The process stopped between sending a create and storing its id."""
        assert pipeline.video is not None
        provider = pipeline.video
        request = video_request_for(job)
        sent_at = job.state.get("submit_sent_at")
        exclude = frozenset(await self.store.remote_ids_since((sent_at or job.created_at) - 3600, excluding=job.id))
        try:
            found = await provider.find_remote(job.id, request=request, sent_at=sent_at, exclude=exclude)
        except Unavailable as exc:
            log.warning("job %s: could not settle the interrupted create: %s", job.id, exc.detail or exc)
            raise AmbiguousSubmit() from exc
        if found is not None:
            log.info("job %s: adopted remote %s after an interrupted create", job.id, found.id)
            return await self._accept_remote(job, found)
        if provider.proves_absence or provider.estimate_cost(request) == 0.0:
            # Free to run again: send it again.
            job = await self._write(job, state={k: v for k, v in job.state.items() if k != "submit_sent_to"})
            return await self._submit_video(job, pipeline)
        raise AmbiguousSubmit()

    def _next_fallback(self, job: Job, pipeline: Pipeline) -> str | None:
        if job.remote_id is not None:
            return None  # the provider has the job (and may bill it): do not start a second one elsewhere
        tried = set(job.state.get("pipelines_tried", [])) | {job.pipeline}
        # This pipeline's own fallbacks, then what is left of the chain the job started on.
        for name in [*pipeline.fallbacks, *job.state.get("fallback_chain", [])]:
            if name not in tried and name in self.registry:
                return name
        return None

    async def _take_fallback(self, job: Job, fallback: str, exc: Unavailable) -> Job:
        # The hop passes admission like a direct request: the fallback must be allowed here and
        # priced; its price replaces the old one's (which billed nothing: it was unavailable),
        # checked against the budgets in the same write.
        if self.hops is None:
            raise exc
        estimate = await self.hops.admit_hop(job, fallback)
        try:
            job = await self._write(job, cost_estimate=estimate if estimate is not None else job.cost_estimate,
                                    spend_limits=await self.hops.hop_limits(job))  # fmt: skip
        except OverBudget as over:
            raise BudgetGuard.refusal(over) from exc
        if job.state.get("moderated") == "skipped" and (job.cost_estimate or 0.0) > 0:
            # The free hop went on through a moderation outage; the paid one is checked again (closed).
            job = await self._write(job, state={k: v for k, v in job.state.items() if k != "moderated"})
        tried = [*job.state.get("pipelines_tried", []), job.pipeline]
        moves = [*job.state.get("fallbacks", []), {"from": job.pipeline, "to": fallback, "reason": exc.code}]
        state = {k: v for k, v in job.state.items() if k != "submit_sent_to"}
        chain = [*self.registry.get(job.pipeline).fallbacks, *job.state.get("fallback_chain", [])]
        chain = list(dict.fromkeys(n for n in chain if n not in tried and n != fallback))
        job = await self._write(
            job,
            pipeline=fallback,
            state={**state, "pipelines_tried": tried, "fallbacks": moves, "fallback_chain": chain},
            detail=f"fallback {job.pipeline} -> {fallback}: {exc.code}",
        )
        log.warning("job %s: %s unavailable (%s), falling back to %s", job.id, tried[-1], exc.detail or exc, fallback)
        self._emit(EventKind.PROGRESS, job, message=f"{tried[-1]} is unavailable; trying {fallback}")
        return job

    async def _image_step(self, job: Job, pipeline: Pipeline, request: VideoRequest) -> tuple[Path, Job]:
        assert pipeline.image is not None
        done = job.state.get("image_step_path")
        if done and Path(done).exists():
            return Path(done), job
        final, made = await self._made(job.id, "first_frame.png")
        if made:
            # Made and paid for before a crash cut off the state write: reuse it, never pay twice.
            state = {**job.state, "image_step_path": str(final)}
            job = await self._write(job, state=state, detail="image step reused after restart")
            return final, job
        width, height = request.dimensions
        image_request = ImageRequest(
            prompt=job.prompt, size=request.size, seed=job.params.seed, client_ref=job.id,
            quality=job.params.options.get("quality"),
        )  # fmt: skip
        temp = self.media.temp_for(final)
        result = await self._rate_limited(job, lambda: pipeline.image.generate(image_request, temp))  # type: ignore[union-attr]
        await asyncio.to_thread(self.media.commit, temp, final)
        state = {**job.state, "image_step_path": str(final), "image_step_cost": result.cost}
        job = await self._write(job, state=state, detail=f"image step done by {pipeline.image.name}")
        return final, job

    async def _run_image_job(self, job: Job, pipeline: Pipeline) -> Job:
        assert pipeline.image is not None
        request = ImageRequest(
            prompt=job.prompt, size=job.params.size, model=job.params.model, seed=job.params.seed, client_ref=job.id,
            quality=job.params.options.get("quality"),
        )  # fmt: skip
        job = await self._write(
            job, provider=pipeline.image.name, model=request.model or pipeline.image.default_model
        )
        final, made = await self._made(job.id, "image.png")
        if made:
            # Made before a crash cut off the state write: deliver it, do not pay again.
            return await self._write(
                job, status=JobStatus.DELIVERING, output_path=str(final), thumbnail_path=str(final), progress=100,
                cost_actual=job.cost_estimate, detail="image reused after restart",
            )  # fmt: skip
        temp = self.media.temp_for(final)
        result = await self._rate_limited(job, lambda: pipeline.image.generate(request, temp))  # type: ignore[union-attr]
        await asyncio.to_thread(self.media.commit, temp, final)
        job = await self._write(
            job,
            status=JobStatus.DELIVERING,
            output_path=str(final),
            thumbnail_path=str(final),
            progress=100,
            cost_actual=result.cost,
            remote_id=result.remote_id,
        )
        return job

    async def _wait_remote(self, job: Job) -> Job:
        pipeline = self.registry.get(job.pipeline)
        assert pipeline.video is not None and job.remote_id is not None
        last: dict[str, Any] = {"progress": job.progress, "note": None, "stored_at": float("-inf")}

        async def on_update(remote: RemoteJob) -> None:
            if remote.progress != last["progress"] or remote.note != last["note"]:
                last["progress"], last["note"] = remote.progress, remote.note
                # Progress is shown from events; the row only needs it now and then (listings, and
                # the lease check every write carries), so a thousand busy jobs do not flood the writer.
                now = time.monotonic()
                if now - last["stored_at"] >= PROGRESS_WRITE_INTERVAL:
                    last["stored_at"] = now
                    await self.store.set_progress(job.id, remote.progress, fence=self.ctx.owner)
                self._emit(EventKind.PROGRESS, job, progress=remote.progress, message=remote.note)

        try:
            # A resumed job keeps the deadline it had before the restart.
            waited = time.time() - job.state.get("remote_since", time.time())
            remote = await wait_for_completion(
                pipeline.video, job.remote_id, on_update=on_update, policy=self.poll_policy,
                started_at=time.monotonic() - max(0.0, waited),
            )  # fmt: skip
        except Unavailable as exc:
            if (fallback := self._next_fallback(job, pipeline)) is None:
                raise
            return await self._take_fallback(job, fallback, exc)
        except GenerationFailed as exc:
            if not exc.retryable or job.state.get("remote_retries", 0) >= 1:
                raise
            return await self._retry_remote(job, exc)
        if remote.cost is not None:
            cost = round(remote.cost + (job.state.get("image_step_cost") or 0.0), 4)
        else:
            cost = job.cost_estimate
        gpu = remote.gpu_seconds  # self-hosted providers report the GPU time they used
        state = {**job.state, "gpu_seconds": round(float(gpu), 3)} if gpu is not None else job.state
        return await self._write(job, status=JobStatus.DOWNLOADING, progress=100, cost_actual=cost, state=state)

    async def _retry_remote(self, job: Job, exc: GenerationFailed) -> Job:
        """Once, for a failure the provider calls its own fault: the failed remote job is over,
        so a new create cannot bill it twice; done steps (the image) are kept. The new create
        passes admission's hop gate first (the pipeline may have been disallowed, or lost its price)."""
        if self.hops is not None:
            await self.hops.admit_hop(job, job.pipeline)
        state = {k: v for k, v in job.state.items() if k not in ("submit_sent_to", "remote_since")}
        state["remote_retries"] = job.state.get("remote_retries", 0) + 1
        state["failed_remote_ids"] = [*job.state.get("failed_remote_ids", []), job.remote_id]
        log.warning("job %s: remote %s failed (%s), trying once more", job.id, job.remote_id, exc.remote_code)
        job = await self._write(
            job, status=JobStatus.SUBMITTING, remote_id=None, progress=0, state=state,
            detail=f"retry after {exc.remote_code or exc.code} on {job.remote_id}",
        )  # fmt: skip
        self._emit(EventKind.PROGRESS, job, message="the provider failed; trying once more")
        return job

    async def _made(self, job_id: str, name: str) -> tuple[Path, bool]:
        """An image's final path and whether it exists, looked up off the event loop (see `_download`)."""
        def look() -> tuple[Path, bool]:
            final = self.media.image_path(job_id, name)
            return final, final.exists()
        return await asyncio.to_thread(look)

    def _outputs(self, job_id: str) -> tuple[Path, bool, Path, bool]:
        final, thumb = self.media.video_path(job_id), self.media.thumbnail_path(job_id)
        return final, final.exists(), thumb, thumb.exists()

    async def _download(self, job: Job) -> Job:
        pipeline = self.registry.get(job.pipeline)
        assert pipeline.video is not None and job.remote_id is not None
        # In a thread: while other jobs' files are fsynced, a mkdir or stat on ext4 waits for the
        # journal (500 jobs finishing at once stalled the event loop 400 ms here).
        final, have_final, thumb, have_thumb = await asyncio.to_thread(self._outputs, job.id)
        if not have_final:
            temp = self.media.temp_for(final)
            await retrying(lambda: pipeline.video.download(job.remote_id, temp), policy=self.poll_policy, what="download")  # type: ignore[union-attr]
            await asyncio.to_thread(probe_video, temp)  # raises OutputInvalid for a broken file
            await asyncio.to_thread(self.media.commit, temp, final)
        if not have_thumb:
            temp = self.media.temp_for(thumb)
            if not await pipeline.video.download_thumbnail(job.remote_id, temp):
                await asyncio.to_thread(write_thumbnail, final, temp)
            await asyncio.to_thread(self.media.commit, temp, thumb)
        pipeline.video.forget(job.remote_id)
        return await self._write(
            job, status=JobStatus.DELIVERING, output_path=str(final), thumbnail_path=str(thumb)
        )


async def cancel_remote(registry: PipelineRegistry, store: Store, job: Job, why: str) -> str | None:
    """Stop the provider's work on a job that ends early; returns the note for the event log."""
    # CANCELLED here means another process marked it while the provider was still working.
    if job.remote_id is None or job.status not in (JobStatus.SUBMITTING, JobStatus.RUNNING, JobStatus.CANCELLED):
        return None
    pipeline = registry.get(job.pipeline)
    if pipeline.video is None:
        return None
    try:
        await pipeline.video.cancel(job.remote_id)
    except Exception as exc:
        log.warning("remote cancel failed for %s", job.id, exc_info=True)
        note = f"job {why}; cancelling remote {job.remote_id} failed: {exc}"
    else:
        note = f"job {why}; remote {job.remote_id} cancelled at {pipeline.video.name}"
    if job.status.terminal:
        await store.add_event(job.id, note)
    return note
