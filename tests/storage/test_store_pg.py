"""What only PostgreSQL has: NOTIFY wake-ups and a listener that comes back, its own migrations.
(The contract itself runs on both backends in test_store_contract.py.)"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest

from storage.db import LATEST_VERSION as SQLITE_LATEST
from storage.db import DatabaseTooNew
from storage.open import BadDatabaseUrl, open_store, sqlite_path
from storage.pg import PgJobStore
from storage.pg.schema import LATEST_VERSION, VERSION_TABLE
from tests.pg import INSTALL_HINT, PgCluster, unavailable
from tests.stores import make_job


async def _open(url: str) -> PgJobStore:
    store = await PgJobStore.open(url)
    return store


async def test_a_notify_wakes_a_waiter_in_another_process_at_once(pg_url: str) -> None:
    gateway, worker = await _open(pg_url), await _open(pg_url)
    try:
        await gateway.wait_for_signal(5)  # the first call connects the listener and returns
        assert gateway.listener.connects == 1
        waiter = asyncio.create_task(gateway.wait_for_signal(60))
        await asyncio.sleep(0)
        began = time.monotonic()
        await worker.publish("job1", "progress", {"progress": 5})
        await asyncio.wait_for(waiter, 30)
        assert time.monotonic() - began < 20, "woken by the NOTIFY, not the 60 s timeout"
        assert gateway.listener.notifications >= 1
    finally:
        await worker.close()
        await gateway.close()


async def test_a_dropped_listener_reconnects_and_the_reader_catches_up_by_id(pg_url: str) -> None:
    gateway, worker = await _open(pg_url), await _open(pg_url)
    try:
        cursor = await gateway.last_signal_id()
        await gateway.wait_for_signal(5)
        pid = gateway.listener.server_pid()
        assert pid is not None
        # An operator (or a network failure) kills the listening connection...
        async with worker.pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        await asyncio.wait_for(gateway.wait_for_signal(60), 30)  # the termination wakes the waiter
        # ...and progress goes on meanwhile, with nobody listening.
        for i in range(3):
            await worker.publish(f"job{i}", "state", {"i": i})
        await asyncio.wait_for(gateway.wait_for_signal(60), 30)  # reconnects, returns to let the reader catch up
        assert gateway.listener.connects == 2 and gateway.listener.server_pid() not in (None, pid)
        missed = await gateway.signals_after(cursor)
        assert [s.job_id for s in missed] == ["job0", "job1", "job2"]
        cursor = missed[-1].id
        # The new connection hears the next NOTIFY.
        waiter = asyncio.create_task(gateway.wait_for_signal(60))
        await asyncio.sleep(0)
        await worker.publish("job3", "state", {})
        await asyncio.wait_for(waiter, 30)
        assert [s.job_id for s in await gateway.signals_after(cursor)] == ["job3"]
    finally:
        await worker.close()
        await gateway.close()


async def test_claiming_passes_over_a_queued_row_another_transaction_is_writing(pg_url: str) -> None:
    store = await _open(pg_url)
    other = await asyncpg.connect(pg_url)
    try:
        t = time.time() - 60
        for i, (job_id, user) in enumerate([("a1", "ann"), ("b1", "bob"), ("a2", "ann")]):
            await store.create(make_job(job_id, user=user, created_at=t + i))
        busy = other.transaction()
        await busy.start()
        await other.execute("SELECT 1 FROM jobs WHERE id = 'a1' FOR UPDATE")  # e.g. a cancel under way
        got = await asyncio.wait_for(
            store.claim_queued("w", 60, platforms=None, max_running=10, max_running_per_user=1, limit=2), 10
        )
        # Not waited for: a1 is skipped, the pick is made again, ann's next job takes her turn.
        assert [j.id for j in got] == ["b1", "a2"]
        await busy.rollback()
        assert await store.claim_queued("w", 60, platforms=None, max_running=10, max_running_per_user=1, limit=2) == []
        assert [j.id for j in await store.claim_queued("w", 60, platforms=None, max_running=10, max_running_per_user=2, limit=2)] == ["a1"]
    finally:
        await other.close()
        await store.close()


async def test_a_newer_schema_is_refused_untouched(pg_cluster: PgCluster) -> None:
    url = await pg_cluster.fresh_database(migrated=False)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE TABLE {VERSION_TABLE} (version INTEGER NOT NULL)")
        await conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES ($1)", LATEST_VERSION + 1)
        with pytest.raises(DatabaseTooNew, match="newer videobot"):
            await open_store(url, data_dir=Path("/nonexistent"))
        assert await conn.fetchval("SELECT to_regclass('jobs')") is None
        assert await conn.fetchval(f"SELECT version FROM {VERSION_TABLE}") == LATEST_VERSION + 1
    finally:
        await conn.close()
        await pg_cluster.drop(url)


async def test_an_empty_database_is_migrated_once_even_by_two_processes_at_once(pg_cluster: PgCluster) -> None:
    url = await pg_cluster.fresh_database(migrated=False)
    stores = await asyncio.gather(_open(url), _open(url), _open(url))
    try:
        async with stores[0].pool.acquire() as conn:
            assert await conn.fetchval(f"SELECT array_agg(version) FROM {VERSION_TABLE}") == [LATEST_VERSION]
            assert await conn.fetchval("SELECT to_regclass('jobs')") is not None
    finally:
        for store in stores:
            await store.close()
    reopened = await _open(url)  # and again later: nothing to do
    await reopened.close()
    await pg_cluster.drop(url)


async def test_sqlite_newer_schema_is_refused_through_open_store(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version={SQLITE_LATEST + 1}")
    raw.close()
    with pytest.raises(DatabaseTooNew):
        await open_store(f"sqlite:///{path}", data_dir=tmp_path)


def test_without_postgresql_the_tests_skip_with_the_reason_but_never_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL"):
        unavailable(INSTALL_HINT)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: PostgreSQL tests must run"):
        unavailable(INSTALL_HINT)


def test_database_urls() -> None:
    data = Path("/data")
    assert sqlite_path(None, data) == data / "videobot.sqlite3"
    assert sqlite_path("", data) == data / "videobot.sqlite3"
    assert sqlite_path("sqlite:///rel/x.db", data) == Path("rel/x.db")
    assert sqlite_path("sqlite:////abs/x.db", data) == Path("/abs/x.db")
    assert sqlite_path("postgresql://h/db", data) is None
    with pytest.raises(BadDatabaseUrl):
        sqlite_path("sqlite://host/x", data)
