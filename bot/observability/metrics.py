"""Prometheus metrics: what happened (counters, histograms) and what is (gauges at scrape time).

Where the numbers come from, so each is counted once:

- Job transitions are observed at the store (`ObservedStore`, wrapping the app's store): a job
  is submitted when its row is created, finished when a write moves it to a terminal state.
  The store refuses to overwrite a terminal state (AlreadyFinished), and a resumed job is
  not created again, so a job restarted five times is still counted once, by the process that
  made the write. Final events on the bus cannot give that: a gateway relays a worker's
  events, and a runner repeats the end of a job someone else ended.
- What only a provider call knows (outcome of each request, rate-limit waits) comes from the
  polling engine through `providers.observe`; command acknowledgements from the adapters
  through `bot.observability.hooks`.
- The state of the queue (jobs by state, the oldest queued, money reserved, live workers) is
  read from the store when Prometheus scrapes (`StoreGauges.refresh`), so every process on one
  database reports the same numbers: aggregate those with max(), not sum().

Label values are bounded sets: kinds, pipelines and providers the code defines, platforms,
fixed outcomes. No job id, prompt, user or workspace ever becomes a label.

With PROMETHEUS_MULTIPROC_DIR set (several processes on one host behind one scrape, as
prometheus-client documents) counters and histograms go to files there and every process's
/metrics shows their sum.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

# prometheus-client turns multi-process mode on when the variable exists at all; an empty one (as
# .env files and compose write "unset") means off here, so drop it before the library reads it.
for _name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
    if _name in os.environ and not os.environ[_name].strip():
        del os.environ[_name]

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest  # noqa: E402
from prometheus_client import multiprocess  # noqa: E402
from prometheus_client.core import GaugeMetricFamily  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

from bot.core.heartbeat import ALIVE_INTERVALS  # noqa: E402
from bot.core.models import JobStatus  # noqa: E402
from providers import observe  # noqa: E402
from providers.observe import Outcome  # noqa: E402

log = logging.getLogger(__name__)

#: The states a job waits or works in (the gauge has every one, zero included).
ACTIVE_STATES = (JobStatus.QUEUED, JobStatus.SUBMITTING, JobStatus.RUNNING, JobStatus.DOWNLOADING, JobStatus.DELIVERING)
#: Seconds: a job takes seconds to an hour; an acknowledgement must stay under Slack's 3 s.
JOB_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
ACK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5)


def multiprocess_dir() -> str | None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    return path or None


class Metrics:
    """Every series this process exports, and the registry /metrics serves."""

    def __init__(self, *, role: str, version: str) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry(auto_describe=True)
        # In multi-process mode the values live in files; registering them too would count twice.
        reg = None if self.multiprocess else self.registry
        if self.multiprocess:
            multiprocess.MultiProcessCollector(self.registry)
        else:
            from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(name, doc, list(labels), registry=reg)

        def histogram(name: str, doc: str, labels: Iterable[str], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, list(labels), buckets=buckets, registry=reg)

        self.jobs_submitted = counter("videobot_jobs_submitted", "Jobs accepted (stored), by kind and pipeline.", ("kind", "pipeline"))
        self.jobs_finished = counter(
            "videobot_jobs_finished", "Jobs that ended: completed, failed, cancelled, or completed but undelivered.",
            ("kind", "pipeline", "outcome"),
        )  # fmt: skip
        self.job_duration = histogram(
            "videobot_job_duration_seconds", "From submission to the result delivered.", ("pipeline",), JOB_BUCKETS
        )
        self.provider_seconds = histogram(
            "videobot_provider_seconds", "From the provider accepting a create to its result.", ("provider",), JOB_BUCKETS
        )
        self.provider_requests = counter(
            "videobot_provider_requests", "Provider requests by outcome (ok, rate_limited, retried, error).", ("provider", "outcome")
        )
        self.rate_limit_waits = counter(
            "videobot_provider_rate_limit_waits", "Waits for a provider's rate limit before asking again.", ("provider",)
        )
        self.spend = counter("videobot_spend_usd", "Settled cost of finished jobs, in USD.", ("pipeline",))
        self.deliveries = counter(
            "videobot_deliveries", "Results posted, delivery attempts retried, results left undelivered.", ("platform", "outcome")
        )
        self.ack_seconds = histogram(
            "videobot_ack_seconds", "From a command received to its acknowledgement.", ("platform",), ACK_BUCKETS
        )
        self.moderation = counter("videobot_moderation", "Moderation checks by outcome (passed, flagged, unavailable).", ("outcome",))
        self.lease_takeovers = counter("videobot_lease_takeovers", "Jobs taken over from a process that stopped holding them.")
        gauge_kw: dict[str, Any] = {"multiprocess_mode": "liveall"} if self.multiprocess else {}
        self.process_info = Gauge(
            "videobot_process_info", "This process: its role and version (always 1).", ("role", "version"), registry=reg, **gauge_kw
        )
        self.process_info.labels(role=role, version=version).set(1)
        self.store_gauges = StoreGauges()
        self.registry.register(self.store_gauges)
        self.role = role

    # --- what the hooks report --------------------------------------------------------------------

    def request(self, provider: str, outcome: Outcome) -> None:
        self.provider_requests.labels(provider=provider, outcome=outcome).inc()

    def rate_limit_wait(self, provider: str) -> None:
        self.rate_limit_waits.labels(provider=provider).inc()

    def ack(self, platform: str, seconds: float) -> None:
        self.ack_seconds.labels(platform=platform).observe(max(seconds, 0.0))

    # --- serving ----------------------------------------------------------------------------------

    async def exposition(self, store: Any | None) -> bytes:
        if store is not None:
            await self.store_gauges.refresh(store)
        return generate_latest(self.registry)

    def close(self) -> None:
        if self.multiprocess:
            try:
                multiprocess.mark_process_dead(os.getpid())
            except Exception:  # a missing directory at shutdown must not hide the real exit
                log.debug("could not mark this process dead for prometheus-client", exc_info=True)


class StoreGauges(Collector):
    """The queue as the store has it, read when /metrics is asked for."""

    def __init__(self) -> None:
        self.by_state: dict[str, int] = {s.value: 0 for s in ACTIVE_STATES}
        self.oldest_queued_seconds = 0.0
        self.reserved_usd = 0.0
        self.workers: dict[str, int] = {r: 0 for r in ("all", "gateway", "worker")}
        self.store_up = 0
        self._lock = asyncio.Lock()

    async def refresh(self, store: Any) -> None:
        """Two small queries (a scrape during a burst of 500 jobs must not read them all): the
        unfinished jobs grouped by status, and the workers table."""
        async with self._lock:
            try:
                totals = await store.unfinished_by_status()
                workers = await store.workers()
            except Exception:
                log.warning("metrics: the store did not answer", exc_info=True)
                self.store_up = 0
                return
        now = time.time()
        by_state = {s.value: 0 for s in ACTIVE_STATES}
        for total in totals:
            if total.status.value in by_state:
                by_state[total.status.value] = total.jobs
        queued = next((t for t in totals if t.status is JobStatus.QUEUED), None)
        alive = {r: 0 for r in ("all", "gateway", "worker")}
        for row in workers:
            # As `videobot status` judges it: a beat within a few intervals (5 s each by default).
            if row.role in alive and now - row.last_seen <= ALIVE_INTERVALS * _heartbeat_seconds():
                alive[row.role] += 1
        self.by_state = by_state
        self.oldest_queued_seconds = max(0.0, now - queued.oldest_created_at) if queued is not None else 0.0
        self.reserved_usd = round(sum(t.reserved_usd for t in totals), 6)
        self.workers = alive
        self.store_up = 1

    def collect(self) -> Iterable[GaugeMetricFamily]:
        states = GaugeMetricFamily("videobot_jobs_in_state", "Unfinished jobs by state (from the store).", labels=["state"])
        for state, count in self.by_state.items():
            states.add_metric([state], count)
        yield states
        yield GaugeMetricFamily(
            "videobot_queue_oldest_seconds", "Age of the oldest queued job; 0 when none waits.", value=self.oldest_queued_seconds
        )
        yield GaugeMetricFamily(
            "videobot_spend_reserved_usd", "Estimates of unfinished jobs, reserved against budgets (USD).", value=self.reserved_usd
        )
        alive = GaugeMetricFamily("videobot_processes_alive", "Processes with a recent heartbeat, by role.", labels=["role"])
        for role, count in self.workers.items():
            alive.add_metric([role], count)
        yield alive
        yield GaugeMetricFamily("videobot_store_up", "1 when the store answered the last scrape.", value=self.store_up)


def _heartbeat_seconds() -> float:
    try:
        return float(os.environ.get("VIDEOBOT_HEARTBEAT_SECONDS") or 5.0)
    except ValueError:
        return 5.0


def install(metrics: Metrics) -> None:
    """Route the provider and adapter hooks to these metrics (one set per process)."""
    from bot.observability import hooks

    observe.set_observer(metrics)
    hooks.set_metrics(metrics)


def uninstall() -> None:
    from bot.observability import hooks

    observe.set_observer(None)
    hooks.set_metrics(None)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("videobot")
    except PackageNotFoundError:
        return "unknown"
