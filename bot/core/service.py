"""The job service: the one door adapters use. Validate, persist, hand to the runner,
return the job at once. Everything a user can do to a job goes through here."""
from __future__ import annotations

import asyncio
import io
import logging
import secrets
import time
from pathlib import Path

from bot.config import CoreSettings
from bot.core.budget import BudgetGuard, Usage, estimate_job_cost
from bot.core.errors import JobNotFound, JobStateError, LimitReached, NeedsConfirmation, NotAllowed
from bot.core.render import job_title
from bot.core.tenant_settings import Effective, TenantSettings
from bot.core.events import EventBus
from bot.core.ids import new_job_id, new_seed
from bot.core.models import TERMINAL, Actor, GenerateParams, GenerateRequest, Job, JobKind, JobStatus, Origin, Tenant, clean_text
from bot.core.runner import Runner, video_request_for
from providers.base import ImageRequest, VideoRequest, parse_size
from providers.errors import InvalidRequest, Unavailable
from providers.input_images import open_image
from providers.pipeline import Pipeline
from providers.registry import PipelineRegistry
from storage.contract import Store
from storage.jobs import AlreadyFinished
from storage.spend import OverBudget, QueueFull, QueueLimit

#: How long a request above the confirm threshold waits for its owner.
CONFIRM_SECONDS = 600
from storage.media import MediaStore

log = logging.getLogger(__name__)





class JobService:
    def __init__(
        self,
        store: Store,
        media: MediaStore,
        registry: PipelineRegistry,
        bus: EventBus,
        runner: Runner | None,
        settings: CoreSettings,
    ) -> None:
        self.store = store
        self.media = media
        self.registry = registry
        self.bus = bus
        self.runner = runner
        self.settings = settings
        self._admins = {a.strip() for a in settings.admin_user_ids.split(",") if a.strip()}
        self._splits = settings.split_map
        self.tenant_settings = TenantSettings(store, settings)
        #: When each user last started a paid job, for the cooldown (per process).
        self._last_paid: dict[tuple[str, str], float] = {}
        self.budget = BudgetGuard(
            store, user_budget=settings.daily_budget_user_usd, workspace_budget=settings.daily_budget_workspace_usd
        )

    # --- new jobs ---------------------------------------------------------------------------

    async def submit(self, request: GenerateRequest, origin: Origin) -> Job:
        """Validate everything, then persist and queue; nothing is stored or billed on bad input."""
        prompt = self._check_prompt(request.prompt)
        here = await self.tenant_settings.effective(origin)
        self._check_where(origin, here)
        if request.kind is JobKind.IMAGE:
            return await self._submit_image(request, prompt, origin, here)
        default = here.get("default_pipeline") if here.source("default_pipeline") != "env" else None
        pipeline_name, split = self._pick_pipeline(request.pipeline or default or self.default_pipeline(image=False))
        pipeline = self.registry.get(pipeline_name)
        self._check_allowed(pipeline.name, request.model, here)
        image = await self._load_image(request)
        seconds = request.seconds if request.seconds is not None else here.get("seconds", pipeline.default_seconds)
        size = (request.size or here.get("size") or pipeline.default_size).lower()
        self._check_limits(seconds, size, here)
        params = GenerateParams(
            seconds=seconds,
            size=size,
            seed=request.seed if request.seed is not None else new_seed(),
            model=request.model,
            options={"audio": True} if request.audio else {},
        )
        job = self._new_job(request.kind, origin, prompt, params, pipeline.name, parent_id=request.parent_id)
        if split is not None:
            job.state["ab"] = split
        if image is not None:
            params.image_path = str(self.media.image_path(job.id, "input.png"))
        return await self._validate_and_persist(job, pipeline, image, here)

    async def reroll(self, job_id: str, origin: Origin) -> Job:
        """Same prompt and settings, a new seed: a variation of the job."""
        parent = await self.get_for(job_id, origin)
        if parent.kind is JobKind.STORY:
            from bot.core.stories import reroll_story  # stories builds on this service

            return await reroll_story(self, parent.id, origin)
        await self._check_may_reuse(parent, origin, "re-roll")
        params = parent.params.model_copy(update={"seed": new_seed()})
        pipeline = self.registry.get(parent.pipeline)
        kind = JobKind.IMAGE if parent.kind is JobKind.IMAGE else JobKind.VARIATION
        job = self._new_job(kind, origin, parent.prompt, params, pipeline.name, parent_id=parent.id)
        job.state = {k: v for k, v in parent.state.items() if k in ("source_video", "source_remote_id", "source_image")}
        if parent.kind in (JobKind.REMIX, JobKind.EXTEND):
            job.kind = parent.kind
        if kind is JobKind.IMAGE:
            job.cost_estimate = self._image_estimate(job, pipeline)
            return await self._persist(job, pipeline)
        return await self._validate_and_persist(job, pipeline, None)

    async def animate(self, job_id: str, origin: Origin, *, prompt: str | None = None, seconds: int | None = None) -> Job:
        """An image result made into a video: the image as the first frame, the same prompt."""
        parent = await self.get_for(job_id, origin)
        await self._check_may_reuse(parent, origin, "animate")
        if parent.kind is not JobKind.IMAGE:
            raise JobStateError(f"Job {parent.id} is a video; Animate makes a video from an image. Try Extend.")
        path = await self.file_for(parent.id, origin)
        request = GenerateRequest(
            prompt=prompt or parent.prompt, image_path=Path(path), seconds=seconds, parent_id=parent.id,
        )  # fmt: skip
        return await self.submit(request, origin)

    async def file_for(self, job_id: str, origin: Origin | None = None) -> str:
        """The finished file of a job (looked up in the caller's tenant), or why there is none."""
        job = await self.get(job_id, tenant=Tenant.of(origin) if origin else None)
        if job.media_expired_at is not None:
            raise JobStateError(f"Job {job.id}'s file was removed (files are kept {self._retention()}).")
        if job.deleted_at is not None:
            raise JobStateError(f"Job {job.id} was deleted.")
        if job.status is not JobStatus.COMPLETED or not job.output_path or not Path(job.output_path).exists():
            raise JobStateError(f"Job {job.id} has no finished file (it is {job.status.value}).")
        return job.output_path

    async def remix(self, job_id: str, prompt: str, origin: Origin) -> Job:
        parent = await self._finished_video(job_id, "remix", origin)
        prompt = self._check_prompt(prompt)
        pipeline = self.registry.get(parent.pipeline)
        params = parent.params.model_copy(update={"image_path": None})
        job = self._new_job(JobKind.REMIX, origin, prompt, params, pipeline.name, parent_id=parent.id)
        job.state = self._source_state(parent)
        return await self._validate_and_persist(job, pipeline, None)

    async def extend(self, job_id: str, origin: Origin, *, seconds: int | None = None, prompt: str | None = None) -> Job:
        parent = await self._finished_video(job_id, "extend", origin)
        text = self._check_prompt(prompt) if prompt else parent.prompt
        pipeline = self.registry.get(parent.pipeline)
        params = parent.params.model_copy(
            update={"image_path": None, "seconds": seconds if seconds is not None else pipeline.default_seconds}
        )
        job = self._new_job(JobKind.EXTEND, origin, text, params, pipeline.name, parent_id=parent.id)
        job.state = self._source_state(parent)
        return await self._validate_and_persist(job, pipeline, None)

    # --- actions on jobs --------------------------------------------------------------------

    async def cancel(self, job_id: str, actor: Actor) -> Job:
        job = await self.get(job_id, tenant=actor.tenant)
        self._check_owner(job, actor, "cancel")
        if job.terminal:
            raise JobStateError(f"Job {job.id} is already {job.status.value}; nothing to cancel.")
        if self.runner is None or not await self.runner.cancel(job.id):
            # Held by another process (or none): mark it; its runner notices and stops it.
            try:
                await self.store.update(job.id, status=JobStatus.CANCELLED, finished_at=time.time(), detail=f"cancelled by {actor.user_id}")
            except AlreadyFinished:
                current = await self.get(job.id)
                raise JobStateError(f"Job {job.id} is already {current.status.value}; nothing to cancel.") from None
            # Gateways show it now (a queued job has no runner that would say so).
            await self._signal(job.id, "cancelled")
        return await self.get(job.id)

    async def redeliver(self, job_id: str) -> Job:
        """Post a finished job's result again after a delivery that failed for good (operator)."""
        job = await self.get(job_id)
        if job.status is not JobStatus.COMPLETED or job.error_code != "undelivered":
            raise JobStateError(f"Job {job.id} is {job.status.value} and was delivered; nothing to post again.")
        if not job.output_path or not Path(job.output_path).exists():
            raise JobStateError(f"Job {job.id}'s file is gone from disk; it cannot be posted again.")
        job = await self.store.reopen_delivery(job.id, "redeliver requested")
        if self.runner is not None and job.origin.platform in self.runner.platforms:
            await self.runner.enqueue(job)
        return job

    async def delete(self, job_id: str, actor: Actor) -> Job:
        """Cancel if still running, remove the files, keep the row (marked deleted) for history."""
        job = await self.get(job_id, tenant=actor.tenant)
        self._check_owner(job, actor, "delete")
        if not job.terminal:
            job = await self.cancel(job.id, actor)
        await asyncio.to_thread(self.media.delete_job_files, job.id)
        return await self.store.update(
            job.id, deleted_at=time.time(), output_path=None, thumbnail_path=None, detail=f"deleted by {actor.user_id}"
        )

    async def set_messages(self, job_id: str, *, status_message_id: str | None = None, result_message_id: str | None = None, extra: dict | None = None) -> Job:
        fields: dict[str, object] = {}
        if status_message_id is not None:
            fields["status_message_id"] = status_message_id
        if result_message_id is not None:
            fields["result_message_id"] = result_message_id
        if extra is not None:
            current = await self.get(job_id)
            fields["origin_extra"] = {**current.origin.extra, **extra}
        return await self.store.update(job_id, **fields)

    # --- reads ------------------------------------------------------------------------------

    async def get(self, job_id: str, *, tenant: Tenant | None = None) -> Job:
        """By id, or by a prefix unique within the caller's tenant (ids get typed by hand).

        With a `tenant` (every lookup from chat), another tenant's job does not exist: the
        answer is "no such job", never its prompt or paths. None is the operator's view.
        """
        key = job_id.strip().lower()
        job = await self.store.get(key)
        if job is not None and (tenant is None or tenant.holds(job)):
            return job
        if len(key) >= 4:
            found = await self.store.find_prefix(
                key, platform=tenant.platform if tenant else None, workspace_id=tenant.workspace_id if tenant else None,
                scoped=tenant is not None,
            )  # fmt: skip
            if len(found) == 1:
                return found[0]
        raise JobNotFound(job_id)

    async def get_for(self, job_id: str, origin: Origin) -> Job:
        """A lookup on behalf of whoever sent `origin` (scoped to their tenant)."""
        return await self.get(job_id, tenant=Tenant.of(origin))

    async def list_jobs(self, *, origin: Origin | None = None, status: JobStatus | None = None, limit: int = 20) -> list[Job]:
        return await self.store.list(
            platform=origin.platform if origin else None,
            user_id=origin.user_id if origin else None,
            statuses=[status] if status else None,
            limit=limit,
        )

    async def find_by_message(self, platform: str, message_id: str) -> Job | None:
        return await self.store.find_by_message(platform, message_id)

    def _retention(self) -> str:
        days = self.settings.retention_days
        return f"for {days:g} days" if days else "for a limited time"

    def default_pipeline(self, *, image: bool) -> str:
        """The setting when it is set, else the best configured pipeline."""
        setting = self.settings.default_image_pipeline if image else self.settings.default_pipeline
        return setting.strip() or self.registry.best(image=image)

    def is_admin(self, user_id: str) -> bool:
        return user_id in self._admins

    def pipelines(self) -> list[str]:
        return self.registry.names()

    async def usage(self, origin: Origin) -> Usage:
        """What the user (and their workspace) spent today against the daily budgets."""
        here = await self.tenant_settings.effective(origin)
        usage = await self.budget.usage(origin)
        return usage.model_copy(update={"user_budget": here.get("user_budget_usd"), "workspace_budget": here.get("tenant_budget_usd") if origin.workspace_id else None})

    async def top_spenders(self, origin: Origin, limit: int = 5) -> list[tuple[str, float]]:
        """Today's biggest spenders in the caller's tenant (for its admins)."""
        rows = await self.budget.ledger.spent_by_user()
        mine = [(user, spent) for platform, user, workspace, _, spent in rows if platform == origin.platform and workspace == origin.workspace_id]
        return mine[:limit]

    async def settings_text(self, origin: Origin) -> str:
        return (await self.tenant_settings.effective(origin)).text()

    async def change_setting(self, origin: Origin, actor: Actor, scope: str, key: str, value: str | None) -> str:
        return await self.tenant_settings.set(origin, actor, scope, key, value)

    def _check_where(self, origin: Origin, here: Effective) -> None:
        """The channels and (Discord) roles a tenant's admins chose."""
        channels = here.get("channels") or []
        if channels and origin.channel_id not in channels:
            raise NotAllowed("The bot makes videos only in the channels this server's admins chose. Try one of those.")
        roles = here.get("roles") or []
        if roles and origin.platform == "discord" and not set(roles) & set(origin.extra.get("roles", [])):
            raise NotAllowed("Making videos here needs one of the roles the admins chose.")

    def _check_allowed(self, pipeline: str, model: str | None, here: Effective) -> None:
        allowed = here.get("pipelines") or []
        if allowed and pipeline not in allowed:
            raise NotAllowed(f"The '{pipeline}' pipeline is not allowed here. Allowed: {', '.join(allowed)}.")
        models = here.get("models") or []
        if model and models and model not in models:
            raise NotAllowed(f"The model '{model}' is not allowed here. Allowed: {', '.join(models)}.")

    def _check_limits(self, seconds: int, size: str, here: Effective) -> None:
        longest = here.get("max_seconds")
        if longest and seconds > longest:
            raise InvalidRequest(f"Clips here are at most {longest} seconds; ask for --seconds {longest} or less.")
        largest = here.get("max_size")
        if largest:
            w, h = parse_size(size)
            mw, mh = parse_size(largest)
            if w * h > mw * mh:
                raise InvalidRequest(f"The largest size here is {largest}; ask for --size {largest} or smaller.")

    # --- internals --------------------------------------------------------------------------

    def _check_prompt(self, prompt: str | None) -> str:
        text = " ".join(clean_text(prompt or "").split())  # every door: remix, extend, scenes too
        if not text:
            raise InvalidRequest("The prompt is empty. Describe the video, for example: /video a teal coupe crossing a desert at noon")
        limit = self.settings.max_prompt_chars
        if len(text) > limit:
            raise InvalidRequest(f"The prompt is {len(text)} characters; the limit is {limit}. Shorten it.")
        return text

    def _check_owner(self, job: Job, actor: Actor, verb: str) -> None:
        """The owner, the operator, or an admin of the job's own tenant; nobody else."""
        if actor.operator:
            return
        same_platform = actor.platform is None or actor.platform == job.origin.platform
        if same_platform and actor.user_id == job.origin.user_id:
            return
        tenant = actor.tenant
        if tenant is not None and tenant.holds(job) and (actor.is_admin or self.is_admin(actor.user_id)):
            return
        raise NotAllowed(f"Only the person who asked for job {job.id} (or an admin here) can {verb} it.")

    async def _check_may_reuse(self, parent: Job, origin: Origin, verb: str) -> None:
        """Re-roll, remix, extend or animate of someone else's job: the new job is the asker's
        own (they pay); where it is allowed is the tenant's `reuse` setting (default: its channel)."""
        if Tenant.of(origin) is None or origin.user_id == parent.origin.user_id or self.is_admin(origin.user_id):
            return
        rule = (await self.tenant_settings.effective(origin)).get("reuse", "channel")
        if rule == "owner":
            raise NotAllowed(f"Here only the person who asked for job {parent.id} can {verb} it.")
        if rule == "channel" and origin.channel_id != parent.origin.channel_id:
            raise NotAllowed(f"You can {verb} someone else's job only in the channel where it was made.")

    async def _finished_video(self, job_id: str, verb: str, origin: Origin) -> Job:
        parent = await self.get_for(job_id, origin)
        await self._check_may_reuse(parent, origin, verb)
        if parent.media_expired_at is not None:
            raise JobStateError(f"Job {parent.id}'s file was removed (files are kept {self._retention()}). Make a new one with /video.")
        if parent.kind is JobKind.IMAGE:
            raise JobStateError(f"Job {parent.id} is an image; only videos can be {verb}ed.")
        if parent.status is not JobStatus.COMPLETED or not parent.output_path or not Path(parent.output_path).exists():
            raise JobStateError(f"Job {parent.id} has no finished video to {verb} (it is {parent.status.value}).")
        return parent

    @staticmethod
    def _source_state(parent: Job) -> dict[str, object]:
        # The image the parent animated, if any: a remix on an image-to-video provider starts from it again.
        image = parent.params.image_path or parent.state.get("image_step_path") or parent.state.get("source_image")
        state: dict[str, object] = {"source_video": parent.output_path, "source_remote_id": parent.remote_id, "source_provider": parent.provider}
        if image:
            state["source_image"] = image
        return state

    def _pick_pipeline(self, name: str) -> tuple[str, dict[str, str] | None]:
        """A pipeline name as is, or for an A/B split name the arm this job falls in (recorded on the job)."""
        split = self._splits.get(name)
        if split is None or name in self.registry:
            return name, None
        arm = split.choose(secrets.token_hex(8))
        if arm not in self.registry:
            raise InvalidRequest(f"The split '{name}' names an unknown pipeline '{arm}'. Tell an admin.")
        return arm, {"split": name, "arm": arm}

    def _validating_pipeline(self, pipeline: Pipeline, request: VideoRequest) -> Pipeline:
        """The pipeline that will take the job: this one, or when it is unavailable (no key,
        retired model) the first of its fallbacks that accepts the request; the runner moves it there."""
        try:
            pipeline.validate(request)
            return pipeline
        except Unavailable:
            for name in pipeline.fallbacks:
                if name not in self.registry:
                    continue
                candidate = self.registry.get(name)
                try:
                    candidate.validate(request)
                except Unavailable:
                    continue
                return candidate
            raise

    def _new_job(self, kind: JobKind, origin: Origin, prompt: str, params: GenerateParams, pipeline: str, *, parent_id: str | None) -> Job:
        return Job(
            id=new_job_id(), parent_id=parent_id, kind=kind, origin=origin, prompt=prompt, params=params,
            pipeline=pipeline, status=JobStatus.QUEUED, created_at=time.time(),
        )  # fmt: skip

    async def _load_image(self, request: GenerateRequest) -> bytes | None:
        """The input image as PNG bytes, refused if unreadable, not an image or too large."""
        if request.image_path is None and request.image_bytes is None:
            return None
        limit = int(self.settings.max_image_mb * 1_000_000)
        if request.image_bytes is not None:
            data, name = request.image_bytes, request.image_name or "attachment"
        else:
            path = request.image_path
            assert path is not None
            name = path.name
            try:
                size = path.stat().st_size
            except OSError:
                raise InvalidRequest(f"Cannot read the image '{path}'; check the path.") from None
            if size > limit:
                raise InvalidRequest(f"The image is {size / 1e6:.1f} MB; the limit is {limit / 1e6:g} MB. Send a smaller one.")
            data = await asyncio.to_thread(path.read_bytes)
        if len(data) > limit:
            raise InvalidRequest(f"The image is {len(data) / 1e6:.1f} MB; the limit is {limit / 1e6:g} MB. Send a smaller one.")

        def to_png() -> bytes:
            out = io.BytesIO()
            open_image(data, name=name, limit=self.settings.max_image_pixels).save(out, "PNG")
            return out.getvalue()

        return await asyncio.to_thread(to_png)

    async def _validate_and_persist(self, job: Job, pipeline: Pipeline, image: bytes | None, here: Effective | None = None) -> Job:
        parse_size(job.params.size)
        request = video_request_for(job)
        taker = self._validating_pipeline(pipeline, request)
        job.cost_estimate = self._priced(estimate_job_cost(taker, request, job), job)
        self._check_priced(job)
        if image is not None and job.params.image_path:
            await asyncio.to_thread(self.media.write_bytes, Path(job.params.image_path), image)
        return await self._persist(job, pipeline, here=here)

    async def _submit_image(self, request: GenerateRequest, prompt: str, origin: Origin, here: Effective) -> Job:
        pipeline = self.registry.get(request.pipeline or self.default_pipeline(image=True))
        self._check_allowed(pipeline.name, request.model, here)
        size = (request.size or pipeline.default_size).lower()
        seed = request.seed if request.seed is not None else new_seed()
        pipeline.validate_image(ImageRequest(prompt=prompt, size=size, model=request.model, seed=seed))
        params = GenerateParams(seconds=0, size=size, seed=seed, model=request.model)
        job = self._new_job(JobKind.IMAGE, origin, prompt, params, pipeline.name, parent_id=request.parent_id)
        job.cost_estimate = self._image_estimate(job, pipeline)
        return await self._persist(job, pipeline, here=here)

    def _image_estimate(self, job: Job, pipeline: Pipeline) -> float | None:
        assert pipeline.image is not None
        estimate = pipeline.image.estimate_cost(ImageRequest(prompt=job.prompt, size=job.params.size, model=job.params.model))
        return self._priced(estimate, job)

    def _queue_limit(self, origin: Origin) -> QueueLimit:
        return QueueLimit(origin.platform, origin.user_id, self.settings.max_queued_per_user)

    @staticmethod
    def _queue_full(full: QueueFull) -> LimitReached:
        return LimitReached(
            f"You have {full.pending} jobs waiting or running (the limit is {full.limit.limit}). Wait for some to finish, or /cancel one."
        )

    async def _persist(self, job: Job, pipeline: Pipeline, *, confirmed: bool = False, here: Effective | None = None) -> Job:
        """The one spend gate every new job passes (video, image, re-roll, remix, extend, animate):
        a known price, the queue limit, and the estimate reserved against the daily budgets in
        the same store transaction as the insert, so it holds across processes."""
        self._check_priced(job)
        # Read once per request: submit already has it.
        here = here or await self.tenant_settings.effective(job.origin)
        job.state.setdefault("moderation_mode", here.get("moderation"))
        if here.get("blocklist"):
            job.state.setdefault("blocklist", here.get("blocklist"))
        if not confirmed and self._needs_confirmation(job, here):
            token = secrets.token_hex(4)
            await self.store.put_pending(token, job, expires_at=time.time() + CONFIRM_SECONDS)
            raise NeedsConfirmation(token, job.cost_estimate or 0.0, job_title(job), CONFIRM_SECONDS)
        self._check_cooldown(job, here)
        limits = self.budget.limits_for(
            job.origin, user_budget=here.get("user_budget_usd"), workspace_budget=here.get("tenant_budget_usd"), overridden=True
        )
        lease: dict[str, object] = {}
        if self.runner is not None:
            owner, seconds = self.runner.lease_for_new()
            lease = {"lease_owner": owner, "lease_seconds": seconds}
        try:
            job = await self.store.create(job, spend_limits=limits, queue_limit=self._queue_limit(job.origin), **lease)  # type: ignore[arg-type]
        except OverBudget as over:
            raise self.budget.refusal(over) from None
        except QueueFull as full:
            raise self._queue_full(full) from None
        if (job.cost_estimate or 0.0) > 0:
            self._last_paid[(job.origin.platform, job.origin.user_id)] = time.monotonic()
        if self.runner is not None:
            await self.runner.enqueue(job)
        else:
            # Stored for another process to run (a gateway's job, `--detach`): the workers are told.
            await self._signal(job.id, "queued")
        return job

    async def _signal(self, job_id: str, kind: str) -> None:
        """Tell other processes (workers, gateways) that a job changed; best effort, the
        workers also look for queued work on their own every VIDEOBOT_CLAIM_INTERVAL_SECONDS."""
        try:
            await self.store.publish(job_id, kind, {})
        except Exception:
            log.warning("job %s: could not signal %s to other processes", job_id, kind, exc_info=True)

    def _needs_confirmation(self, job: Job, here: Effective) -> bool:
        threshold = here.get("confirm_above_usd")
        return threshold is not None and job.origin.platform != "cli" and (job.cost_estimate or 0.0) > threshold

    def _check_cooldown(self, job: Job, here: Effective) -> None:
        wait = float(here.get("cooldown_seconds") or 0)
        if wait <= 0 or (job.cost_estimate or 0.0) <= 0 or job.origin.platform == "cli":
            return
        last = self._last_paid.get((job.origin.platform, job.origin.user_id))
        if last is not None and (left := wait - (time.monotonic() - last)) > 0:
            raise LimitReached(f"Paid videos here are at least {wait:g} s apart; try again in {left:.0f} s.")

    async def confirm(self, token: str, actor: Actor) -> Job:
        """Start a request that waited for its owner's Confirm (re-checked: budgets may have moved)."""
        job, state = await self._take_pending(token, actor, to="confirmed")
        return await self._persist(job, self.registry.get(job.pipeline), confirmed=True)

    async def decline(self, token: str, actor: Actor) -> Job:
        job, _ = await self._take_pending(token, actor, to="cancelled")
        return job

    async def _take_pending(self, token: str, actor: Actor, *, to: str) -> tuple[Job, str]:
        job, state = await self.store.take_pending(token.strip().lower(), to=to, platform=actor.platform or "cli", user_id=actor.user_id)
        if job is None:
            raise JobNotFound(token)
        if state == "not_owner":
            raise NotAllowed("Only the person who asked can confirm or cancel this.")
        if state == "expired":
            raise JobStateError(f"That offer expired after {CONFIRM_SECONDS // 60} minutes; nothing was spent. Ask again.")
        if state != "pending":
            raise JobStateError(f"That request was already {state}.")
        return job, state

    def _check_priced(self, job: Job) -> None:
        """A model without a price would count as free against every budget: refuse it."""
        if job.cost_estimate is not None:
            return
        model = job.params.model or self._default_model(job)
        if model in self.settings.free_set or job.pipeline in self.settings.free_set:
            job.cost_estimate = 0.0
            return
        raise InvalidRequest(
            f"The price of {model or job.pipeline} is not known, so it cannot be counted against budgets. "
            f"An admin can set VIDEOBOT_PRICES={model or job.pipeline}=USD (per second, or per image), "
            "or list it in VIDEOBOT_FREE_MODELS."
        )

    def _default_model(self, job: Job) -> str | None:
        pipeline = self.registry.get(job.pipeline)
        provider = pipeline.image if job.kind is JobKind.IMAGE else pipeline.video
        return provider.default_model if provider is not None else None

    def _priced(self, estimate: float | None, job: Job) -> float | None:
        """The provider's estimate, else VIDEOBOT_PRICES for the model."""
        if estimate is not None:
            return estimate
        model = job.params.model or self._default_model(job)
        price = self.settings.price_map.get(model or "")
        if price is None:
            return None
        return round(price * (1 if job.kind is JobKind.IMAGE else job.params.seconds), 4)
