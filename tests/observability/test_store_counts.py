"""The store observer's counts, write by write on a real SQLite store: each transition once,
whatever writes repeat (deliveries retried and undelivered, moderation, spend, takeovers)."""
from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from bot.observability.metrics import Metrics
from bot.observability.store import JobObserver, ObservedStore
from storage.leases import Holder, this_host
from storage.models import JobStatus
from storage.open import open_store
from tests.observability.support import Scrape
from tests.stores import make_job


@pytest.fixture
async def observed(tmp_path: Path) -> AsyncIterator[tuple[ObservedStore, Metrics]]:
    metrics = Metrics(role="worker", version="test")
    store = ObservedStore(await open_store(None, data_dir=tmp_path), JobObserver(metrics))
    yield store, metrics
    await store.close()


def scrape(metrics: Metrics) -> Scrape:
    return Scrape(generate_latest(metrics.registry).decode())


async def test_undelivered_and_retried_deliveries_spend_and_moderation(observed: tuple[ObservedStore, Metrics]) -> None:
    store, metrics = observed
    job = await store.create(make_job("a", platform="slack", cost_estimate=0.5))
    job = await store.update("a", status=JobStatus.SUBMITTING, state={"moderated": "openai"})
    job = await store.update("a", state={**job.state, "moderated": "openai"})  # the same state written again
    job = await store.update("a", status=JobStatus.RUNNING, provider="sora", state={**job.state, "remote_since": time.time() - 30})
    job = await store.update("a", status=JobStatus.DOWNLOADING, cost_actual=0.4)
    job = await store.update("a", status=JobStatus.DELIVERING)
    for attempt in (1, 2, 3):
        job = await store.update("a", state={**job.state, "delivery": {"attempt": attempt, "first_at": 1.0}})
    await store.update("a", status=JobStatus.COMPLETED, error_code="undelivered", finished_at=time.time())
    s = scrape(metrics)
    assert s.value("videobot_jobs_submitted_total", kind="generate", pipeline="local") == 1
    assert s.value("videobot_moderation_total", outcome="passed") == 1
    assert s.value("videobot_provider_seconds_count", provider="sora") == 1
    assert s.value("videobot_provider_seconds_sum", provider="sora") >= 30
    assert s.value("videobot_deliveries_total", platform="slack", outcome="retried") == 2
    assert s.value("videobot_deliveries_total", platform="slack", outcome="undelivered") == 1
    assert s.value("videobot_deliveries_total", platform="slack", outcome="posted") == 0
    assert s.value("videobot_jobs_finished_total", outcome="undelivered") == 1
    assert s.value("videobot_job_duration_seconds_count") == 0  # never delivered
    assert s.value("videobot_spend_usd_total", pipeline="local") == pytest.approx(0.4)


async def test_flagged_and_unavailable_moderation_and_scenes(observed: tuple[ObservedStore, Metrics]) -> None:
    store, metrics = observed
    await store.create(make_job("f"))
    await store.update("f", status=JobStatus.FAILED, error_code="moderated", finished_at=time.time())
    await store.create(make_job("u"))
    await store.update("u", status=JobStatus.SUBMITTING, state={"moderated": "skipped"})
    await store.create(make_job("scene", state={"story_scene": 1}, cost_estimate=1.0))
    await store.update("scene", status=JobStatus.COMPLETED, cost_actual=1.0, finished_at=time.time())
    s = scrape(metrics)
    assert s.value("videobot_moderation_total", outcome="flagged") == 1
    assert s.value("videobot_moderation_total", outcome="unavailable") == 1
    # A story's scene is part of its story: not submitted, finished or spent on its own.
    assert s.value("videobot_jobs_submitted_total") == 2 and s.value("videobot_jobs_finished_total") == 1
    assert s.value("videobot_spend_usd_total") == 0


async def test_takeover_counts_only_a_job_another_process_held(observed: tuple[ObservedStore, Metrics]) -> None:
    store, metrics = observed
    await store.create(make_job("free"))
    assert await store.claim("free", "me", 60)  # nobody held it: a claim, not a takeover
    ended = subprocess.Popen(["true"])  # a process of this host that has ended: its leases are free at once
    ended.wait()
    dead = Holder(this_host(), ended.pid, 0.0, "dead")
    assert dead.process_gone()
    await store.create(make_job("held"), lease_owner=str(dead), lease_seconds=3600)
    assert await store.claim("held", "me", 60)
    taken = scrape(metrics).value("videobot_lease_takeovers_total")
    held = await store.get("held")
    assert held is not None and held.lease_owner == "me" and taken == 1


class HeldReads:
    """The real store, except that `unfinished` returns only when the test lets it: what the
    runner's adopt loop sees when its read (on the read connection) ran before a write (on the
    writer) and its answer comes back after that write's."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    async def unfinished(self, *args: object, **kwargs: object) -> object:
        rows = await self.inner.unfinished(*args, **kwargs)  # type: ignore[attr-defined]
        self.read.set()
        await self.release.wait()
        return rows

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[tuple[ObservedStore, HeldReads, Metrics]]:
    metrics = Metrics(role="worker", version="test")
    reads = HeldReads(await open_store(None, data_dir=tmp_path))
    store = ObservedStore(reads, JobObserver(metrics))
    yield store, reads, metrics
    await store.close()


async def test_a_read_older_than_a_write_does_not_count_moderation_again(held: tuple[ObservedStore, HeldReads, Metrics]) -> None:
    """Seen once in CI: the adopt loop's listing, read before the moderation write and answered
    after it, made the observer forget the job was moderated, so its next write counted a second pass."""
    store, reads, metrics = held
    await store.create(make_job("m"))
    job = await store.update("m", status=JobStatus.SUBMITTING)
    listing = asyncio.create_task(store.unfinished())
    await reads.read.wait()  # the listing has the job unmoderated
    job = await store.update("m", state={**job.state, "moderated": "openai"})
    reads.release.set()
    stale = await listing
    assert [j.state.get("moderated") for j in stale] == [None]
    job = await store.update("m", provider="sora", state={**job.state, "submit_sent_to": "sora"})
    await store.update("m", status=JobStatus.FAILED, error_code="failed", finished_at=time.time())
    assert scrape(metrics).value("videobot_moderation_total", outcome="passed") == 1


async def test_a_read_older_than_the_end_does_not_count_again(held: tuple[ObservedStore, HeldReads, Metrics]) -> None:
    """A listing from before a job's last delivery attempt and end, answered after them: a later
    write to the ended job (a delete) counts no retried delivery and no second end."""
    store, reads, metrics = held
    await store.create(make_job("d", platform="slack"))
    job = await store.update("d", status=JobStatus.DELIVERING, state={"delivery": {"attempt": 1, "first_at": 1.0}})
    listing = asyncio.create_task(store.unfinished())
    await reads.read.wait()
    job = await store.update("d", state={**job.state, "delivery": {"attempt": 2, "first_at": 1.0}})
    await store.update("d", status=JobStatus.COMPLETED, finished_at=time.time())
    reads.release.set()
    await listing
    await store.update("d", deleted_at=time.time())
    s = scrape(metrics)
    assert s.value("videobot_deliveries_total", platform="slack", outcome="retried") == 1
    assert s.value("videobot_deliveries_total", platform="slack", outcome="posted") == 1
    assert s.value("videobot_jobs_finished_total") == 1
