"""The composition root: one place that builds the store, runner and service from settings."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import cast

from bot import logsafe
from bot.adapters.base import ChatAdapter
from bot.config import Settings
from bot.core.admission import Admission
from bot.core.budget import BudgetGuard
from bot.core.models import Job, JobKind, in_chat
from bot.core.story_driver import StoryDriver
from bot.core.stories import story_rule
from bot.core.story_plan import StoryPlanner
from bot.core.takes import takes_rule
from bot.core.takes_driver import TakesDriver
from bot.core.tenant_settings import TenantSettings
from bot.core.events import EventBus
from bot.core.runner import Runner
from bot.core.service import JobService, default_pipeline
from bot.moderation import build_moderator
from bot.observability.health import Readiness, database_check
from bot.observability.metrics import Metrics, install, package_version, uninstall
from bot.observability.store import JobObserver, ObservedStore
from bot.pipelines import build_registry
from providers import input_images
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
    #: Prometheus metrics of this process (None: off, see bot/observability/metrics.py).
    metrics: Metrics | None = None
    #: What /readyz checks; the roles add theirs (chat connections, heartbeat).
    readiness: Readiness = field(default_factory=Readiness)

    async def announce(self, job: Job) -> None:
        """A job started outside chat (the web gallery): have its platform's adapter post its status
        message now. Without that adapter here (`videobot web` alone) the process that adopts the job
        posts it on the job's first event (the origin's VIA mark, bot.core.actions)."""
        adapter = self.adapters.get(job.origin.platform)
        if adapter is None or not in_chat(job):
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
        if self.metrics is not None:
            uninstall()
            self.metrics.close()


async def open_app(settings: Settings, *, registry: PipelineRegistry | None = None, metrics_role: str | None = None) -> App:
    """Everything wired but not started: call `app.runner.start()` once deliverers are registered.

    `metrics_role` (a long-running process: run's role, or web) turns metrics on when
    VIDEOBOT_METRICS_PORT or VIDEOBOT_WEB_PORT is set: the store's job writes are counted."""
    core = settings.core
    logging.getLogger().setLevel(core.log_level.upper())
    input_images.configure(max_pixels=core.max_image_pixels)  # providers re-read stored inputs under it too
    logsafe.protect(logsafe.settings_secrets(settings))  # no token, key or personal link in any log record
    data = core.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    media = MediaStore(core.media_root)
    # Media paths go into the store relative to the media directory (shared by every process).
    store: Store = await open_store(core.database_url, data_dir=data, media_root=media.root)
    metrics: Metrics | None = None
    if metrics_role is not None and core.metrics_on:
        metrics = Metrics(role=metrics_role, version=package_version())
        install(metrics)
    # Job writes tag the log lines of the task that makes them (and are counted, metrics on).
    store = cast(Store, ObservedStore(store, JobObserver(metrics)))
    registry = registry if registry is not None else build_registry(settings)
    bus = EventBus()
    budget = BudgetGuard(store, user_budget=core.daily_budget_user_usd, workspace_budget=core.daily_budget_workspace_usd)
    admission = Admission(
        store, media, registry, core, TenantSettings(store, core), budget,
        default_pipeline=lambda image: default_pipeline(core, registry, image=image),
    )  # fmt: skip
    admission.kind_rules[JobKind.STORY] = story_rule(core)
    admission.kind_rules[JobKind.TAKES] = takes_rule(core)
    runner = Runner(
        store,
        media,
        registry,
        bus,
        max_running=core.max_concurrent_jobs,
        max_running_per_user=core.max_running_per_user,
        lease_seconds=core.lease_seconds,
        poll_policy=PollPolicy(timeout=core.job_timeout_minutes * 60),
        drivers={JobKind.STORY: StoryDriver, JobKind.TAKES: TakesDriver},
        moderator=build_moderator(settings),
        moderation_on_outage=core.moderation_on_outage.lower(),
        hops=admission,
    )
    planner = StoryPlanner.from_settings(settings.openai)
    service = JobService(store, media, registry, bus, runner, core, admission=admission, planner=planner)
    app = App(settings, store, media, registry, bus, runner, service, metrics=metrics)
    app.readiness.add("database", database_check(store))
    return app
