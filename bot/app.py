"""The composition root: one place that builds the store, runner and service from settings."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bot.adapters.base import ChatAdapter
from bot.config import Settings
from bot.core.models import Job
from storage.spend import SpendLimit
from bot.core.events import EventBus
from bot.core.runner import Runner
from bot.core.service import JobService
from bot.moderation import build_moderator
from bot.pipelines import build_registry
from providers.polling import PollPolicy
from providers.registry import PipelineRegistry
from storage.contract import Store
from storage.media import MediaStore
from storage.open import open_store

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    store: Store
    media: MediaStore
    registry: PipelineRegistry
    bus: EventBus
    runner: Runner
    service: JobService
    #: The chat adapters rendering progress in this process, by platform (each registers itself
    #: when it starts serving, and leaves on stop): jobs started outside chat are announced there.
    adapters: dict[str, ChatAdapter] = field(default_factory=dict)

    async def announce(self, job: Job) -> None:
        """A job started outside chat (the web gallery): have its platform's adapter post its status
        message now. Without that adapter here (`videobot web` alone) the process that adopts the job
        posts it on the job's first event (the origin's VIA mark, bot.core.actions)."""
        adapter = self.adapters.get(job.origin.platform)
        if adapter is None:
            return
        try:
            await adapter.announce(job)
        except Exception:
            # The job runs anyway; its card comes with its first event, its result at the end.
            log.warning("job %s: could not announce it in %s", job.id, job.origin.platform, exc_info=True)

    async def close(self) -> None:
        await self.runner.stop()
        if self.runner.moderator is not None:
            await self.runner.moderator.aclose()
        await self.bus.close()
        await self.registry.aclose()
        await self.store.close()


async def open_app(settings: Settings, *, registry: PipelineRegistry | None = None) -> App:
    """Everything wired but not started: call `app.runner.start()` once deliverers are registered."""
    core = settings.core
    logging.getLogger().setLevel(core.log_level.upper())
    data = core.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    media = MediaStore(core.media_root)
    # Media paths go into the store relative to the media directory (shared by every process).
    store = await open_store(core.database_url, data_dir=data, media_root=media.root)
    registry = registry if registry is not None else build_registry(settings)
    bus = EventBus()
    runner = Runner(
        store,
        media,
        registry,
        bus,
        max_running=core.max_concurrent_jobs,
        max_running_per_user=core.max_running_per_user,
        lease_seconds=core.lease_seconds,
        poll_policy=PollPolicy(timeout=core.job_timeout_minutes * 60),
    )
    runner.moderator = build_moderator(settings)
    runner.moderation_on_outage = core.moderation_on_outage.lower()
    service = JobService(store, media, registry, bus, runner, core)
    async def limits(job: Job) -> list[SpendLimit]:
        # The tenant's own budgets (its settings) when a fallback hop is re-priced, as at submit.
        here = await service.tenant_settings.effective(job.origin)
        return service.budget.limits_for(
            job.origin, user_budget=here.get("user_budget_usd"), workspace_budget=here.get("tenant_budget_usd"), overridden=True
        )

    runner.spend_limits = limits
    return App(settings, store, media, registry, bus, runner, service)
