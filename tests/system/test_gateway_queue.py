"""A gateway shows a waiting job's place in line, on SQLite and on PostgreSQL.

Jobs stored by a gateway wait in the store, unleased, until a worker claims them; no runner
holds them, so the gateway's relay reads the workers' fair order from the store and publishes
QUEUED events with the position on its bus, as the runner does in one process. A gateway app
and a worker app on one database stand for the two processes (as in test_relay.py); what is
checked is the events the gateway's adapters receive.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bot.app import open_app
from bot.config import load_settings
from bot.core.models import Actor, EventKind, GenerateRequest, JobStatus, Origin, ProgressEvent
from bot.core.relay import Relay
from tests.apps import FAST
from tests.stores import BACKENDS, backend_url

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    return backend_url(request)


def places(seen: list[ProgressEvent]) -> dict[str, int | None]:
    """What each job's card says now: its place in line, or None once it is past the queue."""
    shown: dict[str, int | None] = {}
    for event in seen:
        shown[event.job.id] = event.position if event.kind is EventKind.QUEUED else None
    return shown


async def until(check: Any, what: str, seen: list[ProgressEvent], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; the cards say {places(seen)}")
        await asyncio.sleep(0.01)


async def test_jobs_waiting_for_a_worker_show_their_place_in_the_fair_order(settings: Any, tmp_path: Path) -> None:
    from bench.sleep_provider import sleep_pipeline
    from bot.cli.run import Worker

    gateway = await open_app(load_settings())
    gateway.registry.register("sleep", lambda: sleep_pipeline(60.0, tmp_path))
    gateway.service.runner = None  # as `--role gateway`: jobs are stored for the workers
    relay = Relay(gateway.store, gateway.bus, wait_seconds=0.05, positions_seconds=0.05)
    seen: list[ProgressEvent] = []

    async def record(event: ProgressEvent) -> None:
        seen.append(event)

    gateway.bus.subscribe(record)
    worker_app = await open_app(settings)
    worker_app.registry.register("sleep", lambda: sleep_pipeline(60.0, tmp_path))
    worker_app.runner.poll_policy = FAST
    worker: Worker | None = None
    try:
        await relay.start()

        async def submit(user: str) -> str:
            request = GenerateRequest(prompt=f"a long pan for {user}", pipeline="sleep", seconds=1, size="128x72")
            return (await gateway.service.submit(request, Origin(platform="cli", user_id=user))).id

        a1, a2, b1 = await submit("alice"), await submit("alice"), await submit("bob")
        # Round-robin across users: alice's second waits behind bob's first.
        await until(lambda: places(seen) == {a1: 1, b1: 2, a2: 3}, "places 1, 2, 3", seen)

        # Alice's first is cancelled at the gateway: her second is now the older wait of the two.
        await gateway.service.cancel(a1, Actor(user_id="alice"))
        await until(lambda: places(seen) == {a1: None, a2: 1, b1: 2}, "alice's second first", seen)

        # A worker with one slot takes it; bob's is next, and so is a new job of alice's (she holds one).
        worker = Worker(worker_app)
        worker_app.runner.set_capacity(1)
        await worker.start()
        await until(lambda: places(seen) == {a1: None, a2: None, b1: 1}, "bob's next", seen)
        assert (await gateway.store.get(a2)).status is not JobStatus.QUEUED  # type: ignore[union-attr]
        a3 = await submit("alice")
        await until(lambda: places(seen) == {a1: None, a2: None, b1: 1, a3: 2}, "alice's third after bob's", seen)
    finally:
        await relay.stop()
        if worker is not None:
            await worker.stop()
        await worker_app.close()
        await gateway.close()
