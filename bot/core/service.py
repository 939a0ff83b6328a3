"""The job service: what adapters call for jobs. It builds each new job from a request (defaults
filled in), hands it to admission (every rule, the reservation and the insert), and gives it to
the runner; it answers lookups and actions on jobs for whoever asks."""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from bot.config import CoreSettings
from bot.core.admission import CONFIRM_SECONDS, Admission
from bot.core.budget import BudgetGuard, Usage
from bot.core.catalog import PipelineInfo, offered, pipeline_info
from bot.core.errors import JobNotFound, JobStateError, NotAllowed
from bot.core.events import EventBus
from bot.core.ids import new_job_id, new_seed
from bot.core.models import PLACE, Actor, GenerateParams, GenerateRequest, Job, JobKind, JobStatus, Origin, Tenant
from bot.core.runner import Runner
from bot.core.story_plan import StoryPlanner
from bot.core.take_set import as_set
from bot.core.tenant_settings import Effective, TenantSettings
from providers.registry import PipelineRegistry
from storage.contract import Store
from storage.jobs import AlreadyFinished
from storage.media import MediaStore

__all__ = ["CONFIRM_SECONDS", "JobService", "default_pipeline"]


def default_pipeline(settings: CoreSettings, registry: PipelineRegistry, *, image: bool) -> str:
    """The setting when it is set, else the best configured pipeline."""
    setting = settings.default_image_pipeline if image else settings.default_pipeline
    return setting.strip() or registry.best(image=image)

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
        *,
        admission: Admission | None = None,
        planner: StoryPlanner | None = None,
    ) -> None:
        self.store = store
        self.media = media
        self.registry = registry
        self.bus = bus
        self.runner = runner
        self.settings = settings
        if admission is None:
            tenant_settings = TenantSettings(store, settings)
            budget = BudgetGuard(store, user_budget=settings.daily_budget_user_usd, workspace_budget=settings.daily_budget_workspace_usd)
            admission = Admission(
                store, media, registry, settings, tenant_settings, budget,
                default_pipeline=lambda image: default_pipeline(settings, registry, image=image),
            )
        self.admission = admission
        #: Plans story premises (a paid text model when OpenAI is configured, else offline).
        self.planner = planner or StoryPlanner()
        self.tenant_settings = admission.tenant_settings
        self.budget = admission.budget

    # --- new jobs ---------------------------------------------------------------------------

    async def submit(self, request: GenerateRequest, origin: Origin) -> Job:
        """Validate everything, then persist and queue; nothing is stored or billed on bad input."""
        door = self.admission
        prompt = door.prompt(request.prompt)
        here = await door.rules(origin)
        await door.turns.wait()  # after the settings read: its callers wake together (see bot.core.turns)
        door.check_where(origin, here)
        image_kind = request.kind is JobKind.IMAGE
        pipeline, split = door.chosen_pipeline(request.pipeline, here, image=image_kind)
        door.check_allowed(pipeline.name, request.model, here)
        if image_kind:
            size = (request.size or pipeline.default_size).lower()
            params = GenerateParams(seconds=0, size=size, seed=request.seed if request.seed is not None else new_seed(), model=request.model)
            job = self.new_job(JobKind.IMAGE, origin, prompt, params, pipeline.name, parent_id=request.parent_id)
            return await self.start(self._as_takes(job, request, here), here=here)
        image = await door.load_image(request)
        seconds = request.seconds if request.seconds is not None else here.get("seconds", pipeline.default_seconds)
        size = (request.size or here.get("size") or pipeline.default_size).lower()
        door.check_limits(seconds, size, here)
        params = GenerateParams(
            seconds=seconds,
            size=size,
            seed=request.seed if request.seed is not None else new_seed(),
            model=request.model,
            options={"audio": True} if request.audio else {},
        )
        job = self.new_job(request.kind, origin, prompt, params, pipeline.name, parent_id=request.parent_id)
        if split is not None:
            job.state["ab"] = split
        if image is not None:
            params.image_path = str(self.media.image_path(job.id, "input.png"))
        return await self.start(self._as_takes(job, request, here), image=image, here=here)

    def _as_takes(self, job: Job, request: GenerateRequest, here: Effective) -> Job:
        """Several takes asked for (`--takes N`, else the tenant's `takes` default within the
        operator's ceiling): the job becomes a set of N (admission checks N and prices all N)."""
        n = request.takes
        if n is None:
            n = min(int(here.get("takes") or 1), self.settings.max_takes)
        return as_set(job, n) if n != 1 else job

    async def reroll(self, job_id: str, origin: Origin, *, admin: bool = False) -> Job:
        """Same prompt and settings, a new seed: a variation of the job."""
        parent = await self.get_for(job_id, origin, admin=admin)
        if parent.kind is JobKind.STORY:
            # A story is told again by the story service (bot.core.stories.reroll routes both kinds).
            raise JobStateError(f"Job {parent.id} is a story; re-roll it with the story's Re-roll.")
        await self.admission.check_reuse(parent, origin, "re-roll", admin=admin)
        params = parent.params.model_copy(update={"seed": new_seed()})
        kind = JobKind.IMAGE if parent.kind is JobKind.IMAGE else JobKind.VARIATION
        job = self.new_job(kind, origin, parent.prompt, params, parent.pipeline, parent_id=parent.id)
        job.state = {k: v for k, v in parent.state.items() if k in ("source_video", "source_remote_id", "source_image")}
        if parent.kind in (JobKind.REMIX, JobKind.EXTEND):
            job.kind = parent.kind
        return await self.start(job)

    async def animate(self, job_id: str, origin: Origin, *, prompt: str | None = None, seconds: int | None = None, admin: bool = False) -> Job:
        """An image result made into a video: the image as the first frame, the same prompt."""
        parent = await self.get_for(job_id, origin, admin=admin)
        await self.admission.check_reuse(parent, origin, "animate", admin=admin)
        if parent.kind is not JobKind.IMAGE:
            raise JobStateError(f"Job {parent.id} is a video; Animate makes a video from an image. Try Extend.")
        path = await self.file_for(parent.id, origin, admin=admin)
        request = GenerateRequest(
            prompt=prompt or parent.prompt, image_path=Path(path), seconds=seconds, parent_id=parent.id,
        )  # fmt: skip
        return await self.submit(request, origin)

    async def file_for(self, job_id: str, origin: Origin | None = None, *, admin: bool = False) -> str:
        """The finished file of a job (looked up in the caller's tenant), or why there is none."""
        job = await self.get_for(job_id, origin, admin=admin) if origin else await self.get(job_id)
        if job.media_expired_at is not None:
            raise JobStateError(f"Job {job.id}'s file was removed (files are kept {self._retention()}).")
        if job.deleted_at is not None:
            raise JobStateError(f"Job {job.id} was deleted.")
        if job.status is not JobStatus.COMPLETED or not job.output_path or not Path(job.output_path).exists():
            raise JobStateError(f"Job {job.id} has no finished file (it is {job.status.value}).")
        return job.output_path

    async def remix(self, job_id: str, prompt: str, origin: Origin, *, admin: bool = False) -> Job:
        parent = await self._finished_video(job_id, "remix", origin, admin=admin)
        text = self.admission.prompt(prompt)
        params = parent.params.model_copy(update={"image_path": None})
        job = self.new_job(JobKind.REMIX, origin, text, params, parent.pipeline, parent_id=parent.id)
        job.state = self._source_state(parent)
        return await self.start(job)

    async def extend(self, job_id: str, origin: Origin, *, seconds: int | None = None, prompt: str | None = None, admin: bool = False) -> Job:
        parent = await self._finished_video(job_id, "extend", origin, admin=admin)
        text = self.admission.prompt(prompt) if prompt else parent.prompt
        pipeline = self.registry.get(parent.pipeline)
        params = parent.params.model_copy(
            update={"image_path": None, "seconds": seconds if seconds is not None else pipeline.default_seconds}
        )
        job = self.new_job(JobKind.EXTEND, origin, text, params, pipeline.name, parent_id=parent.id)
        job.state = self._source_state(parent)
        return await self.start(job)

    def new_job(self, kind: JobKind, origin: Origin, prompt: str, params: GenerateParams, pipeline: str, *, parent_id: str | None) -> Job:
        return Job(
            id=new_job_id(), parent_id=parent_id, kind=kind, origin=origin, prompt=prompt, params=params,
            pipeline=pipeline, status=JobStatus.QUEUED, created_at=time.time(),
        )  # fmt: skip

    async def start(self, job: Job, *, image: bytes | None = None, here: Effective | None = None, confirmed: bool = False) -> Job:
        """Through the door (every rule, the reservation, the insert), then to the runner."""
        await self._inherit_place(job)
        lease: dict[str, object] = {}
        if self.runner is not None:
            owner, seconds = self.runner.lease_for_new()
            lease = {"lease_owner": owner, "lease_seconds": seconds}
        job = await self.admission.admit(job, image=image, here=here, confirmed=confirmed, lease=lease)
        if self.runner is not None:
            await self.runner.enqueue(job)
        else:
            # Stored for another process to run (a gateway's job, `--detach`): the workers are told.
            await self._signal(job.id, "queued")
        return job

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
            found = [j for j in found if tenant is None or tenant.holds(j)]
            if len(found) == 1:
                return found[0]
        raise JobNotFound(job_id)

    async def get_for(self, job_id: str, origin: Origin, *, admin: bool = False) -> Job:
        """A lookup on behalf of whoever sent `origin`: in their tenant, and a private job only for
        its owner, the tenant's admins, or someone asking from inside the same conversation."""
        job = await self.get(job_id, tenant=Tenant.of(origin))
        if Tenant.of(origin) is not None and not Actor.of(origin, is_admin=admin or self.is_admin(origin.user_id)).sees(job):
            raise JobNotFound(job_id)
        return job

    async def list_jobs(self, *, origin: Origin | None = None, status: JobStatus | None = None, limit: int = 20) -> list[Job]:
        jobs = await self.store.list(
            platform=origin.platform if origin else None,
            user_id=origin.user_id if origin else None,
            statuses=[status] if status else None,
            limit=limit,
        )
        if origin is None or Tenant.of(origin) is None:
            return jobs
        # A user's own jobs, in the tenant they ask from (their DM jobs only in their DM, and back).
        tenant = Tenant.of(origin)
        return [j for j in jobs if tenant is not None and tenant.holds(j)]

    async def find_by_message(self, platform: str, message_id: str) -> Job | None:
        return await self.store.find_by_message(platform, message_id)

    def _retention(self) -> str:
        days = self.settings.retention_days
        return f"for {days:g} days" if days else "for a limited time"

    def default_pipeline(self, *, image: bool) -> str:
        return default_pipeline(self.settings, self.registry, image=image)

    def is_admin(self, user_id: str) -> bool:
        return self.admission.is_admin(user_id)

    def pipelines(self) -> list[str]:
        return self.registry.names()

    def offered_pipelines(self, *, image: bool) -> list[PipelineInfo]:
        """The configured pipelines a command may name (for autocomplete and help)."""
        return offered(self.registry, image=image)

    def pipeline_info(self, name: str) -> PipelineInfo | None:
        return pipeline_info(self.registry, name)

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
        if origin.direct:
            raise NotAllowed("Settings belong to a workspace or server; change them there, not in a direct message.")
        return await self.tenant_settings.set(origin, actor, scope, key, value)

    # --- confirmations ------------------------------------------------------------------------

    async def confirm(self, token: str, actor: Actor) -> Job:
        """Start a request that waited for its owner's Confirm: every rule again (settings, budgets
        and prices may have moved while it waited)."""
        job = await self.take_pending(token, actor, to="confirmed")
        return await self.start(job, confirmed=True)

    async def decline(self, token: str, actor: Actor) -> Job:
        return await self.take_pending(token, actor, to="cancelled")

    async def take_pending(self, token: str, actor: Actor, *, to: str) -> Job:
        """The job an offer holds, for its owner, once (then it is `to`)."""
        job, state = await self.store.take_pending(token.strip().lower(), to=to, platform=actor.platform or "cli", user_id=actor.user_id)
        if job is None:
            raise JobNotFound(token)
        if state == "not_owner":
            raise NotAllowed("Only the person who asked can confirm or cancel this.")
        if state == "expired":
            raise JobStateError(f"That offer expired after {CONFIRM_SECONDS // 60} minutes; nothing was spent. Ask again.")
        if state != "pending":
            raise JobStateError(f"That request was already {state}.")
        return job

    # --- internals --------------------------------------------------------------------------

    def _check_owner(self, job: Job, actor: Actor, verb: str) -> None:
        """The owner, the operator, or an admin of the job's own tenant; nobody else."""
        if actor.operator:
            return
        same_platform = actor.platform is None or actor.platform == job.origin.platform
        if same_platform and actor.user_id == job.origin.user_id:
            return
        tenant = actor.tenant
        if tenant is not None and tenant.holds(job) and not actor.direct and (actor.is_admin or self.is_admin(actor.user_id)):
            return
        raise NotAllowed(f"Only the person who asked for job {job.id} (or an admin here) can {verb} it.")

    async def _finished_video(self, job_id: str, verb: str, origin: Origin, *, admin: bool = False) -> Job:
        parent = await self.get_for(job_id, origin, admin=admin)
        await self.admission.check_reuse(parent, origin, verb, admin=admin)
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

    async def _inherit_place(self, job: Job) -> None:
        """A job made from another in the same conversation is as private as that one: a button or
        reaction's payload may not say that its channel is private (Slack's block actions do not),
        but the original's record does."""
        if job.parent_id is None or job.origin.private:
            return
        parent = await self.store.get(job.parent_id)
        if parent is not None and parent.origin.private and parent.origin.channel_id == job.origin.channel_id:
            job.origin.extra[PLACE] = parent.origin.place
            job.private = True

    async def _signal(self, job_id: str, kind: str) -> None:
        """Tell other processes (workers, gateways) that a job changed; best effort, the
        workers also look for queued work on their own every VIDEOBOT_CLAIM_INTERVAL_SECONDS."""
        try:
            await self.store.publish(job_id, kind, {})
        except Exception:
            log.warning("job %s: could not signal %s to other processes", job_id, kind, exc_info=True)
