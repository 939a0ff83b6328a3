"""`videobot db migrate` and `videobot db copy`, through the real command line, on a real PostgreSQL."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import Settings
from storage.contract import Store
from storage.models import JobStatus
from storage.open import open_store
from storage.pg.schema import LATEST_VERSION as PG_LATEST
from tests.pg import PgCluster
from tests.stores import make_job, raw_sql


async def videobot(*argv: str) -> int:
    # The CLI runs its own event loop (asyncio.run): give it a thread, as a shell would give it a process.
    return await asyncio.to_thread(main, list(argv))


async def _history(store: Store) -> None:
    """A little of everything a real history holds."""
    now = time.time()
    await store.create(make_job("story1", user="ann", platform="slack", workspace="T1", created_at=now - 50, cost_estimate=1.5,
                                extra={"thread_ts": "1.5"}, user_name="Ann"), lease_owner="h~b/1/1.00/aa", lease_seconds=60)  # fmt: skip
    await store.create(make_job("scene1", user="ann", platform="slack", workspace="T1", parent="story1", created_at=now - 49,
                                state={"story_scene": 1, "image_step_cost": 0.02}))  # fmt: skip
    await store.update("story1", fence="h~b/1/1.00/aa", status=JobStatus.RUNNING, remote_id="rem-1")
    await store.update("story1", fence="h~b/1/1.00/aa", status=JobStatus.COMPLETED, cost_actual=1.25, finished_at=now - 10,
                       output_path="/m/story1/video.mp4", state={"gpu_seconds": 3.5})  # fmt: skip
    await store.add_event("story1", "redelivered", by="op")
    await store.create(make_job("plain", user="bob", platform="discord", workspace="G1", created_at=now - 5, prompt="ünïcode ✓",
                                private=True))  # fmt: skip
    await store.update("plain", status=JobStatus.FAILED, error_code="content_policy", error_message="no", finished_at=now)
    await store.put_setting("slack", "T1", "tenant", "", "user_budget_usd", 3.0, by="admin")
    await store.put_setting("discord", "G1", "channel", "C9", "pipeline", "local", by="admin")
    await store.put_pending("tok1", make_job("pend1", user="ann", platform="slack", cost_estimate=4.0), expires_at=now + 600)


COLUMNS = "SELECT id, story_scene, image_step_cost, private FROM jobs ORDER BY id"


async def _columns(url: str, data_dir: Path) -> list[tuple[object, ...]]:
    """The columns copied out of the state (and the privacy flag), as the database holds them."""
    return [(r[0], r[1], r[2], bool(r[3])) for r in await raw_sql(url, data_dir, COLUMNS)]


async def _same(first: Store, second: Store) -> None:
    jobs = await first.list(include_deleted=True, limit=100)
    assert [j.id for j in jobs] == [j.id for j in await second.list(include_deleted=True, limit=100)]
    for job in jobs:
        assert await second.get(job.id) == job
        assert await second.events(job.id) == await first.events(job.id)
    for platform, workspace in (("slack", "T1"), ("discord", "G1")):
        assert await second.settings_rows(platform, workspace) == await first.settings_rows(platform, workspace)
    assert await second.spend_since(platform="slack", since=0) == await first.spend_since(platform="slack", since=0)


async def test_db_copy_moves_a_sqlite_history_to_postgresql_and_back(settings: Settings, pg_url: str, tmp_path: Path) -> None:
    source_url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    source = await open_store(source_url, data_dir=tmp_path)
    await _history(source)
    await source.close()

    assert await videobot("db", "copy", "--from", source_url, "--to", pg_url) == 0
    source, target = await open_store(source_url, data_dir=tmp_path), await open_store(pg_url, data_dir=tmp_path)
    try:
        await _same(source, target)
        assert (await target.events("story1"))[1]["runner"] == "h~b/1/1.00/aa"
        assert await _columns(pg_url, tmp_path) == await _columns(source_url, tmp_path) == [
            ("plain", None, None, True), ("scene1", 1, 0.02, False), ("story1", None, None, False),
        ]
        job, state = await target.take_pending("tok1", to="confirmed", platform="slack", user_id="ann")
        assert state == "pending" and job is not None and job.cost_estimate == 4.0
    finally:
        await source.close()
        await target.close()

    # Again: nothing more is copied, nothing doubled.
    assert await videobot("db", "copy", "--from", source_url, "--to", pg_url) == 0
    target = await open_store(pg_url, data_dir=tmp_path)
    try:
        assert len(await target.events("story1")) == 4 and len(await target.list(include_deleted=True, limit=100)) == 3
        await target.create(make_job("newer", user="cat"))  # the PostgreSQL bot goes on
    finally:
        await target.close()

    # A target with jobs of its own is refused, unless --append.
    other_url = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    other = await open_store(other_url, data_dir=tmp_path)
    await other.create(make_job("elsewhere"))
    await other.close()
    assert await videobot("db", "copy", "--from", other_url, "--to", pg_url) == 1
    assert await videobot("db", "copy", "--from", other_url, "--to", pg_url, "--append") == 0

    # And back: PostgreSQL to a new SQLite file, row for row.
    back_url = f"sqlite:///{tmp_path / 'back.sqlite3'}"
    assert await videobot("db", "copy", "--from", pg_url, "--to", back_url) == 0
    target, back = await open_store(pg_url, data_dir=tmp_path), await open_store(back_url, data_dir=tmp_path)
    try:
        await _same(target, back)
        assert len(await back.list(limit=100)) == 5
        assert await _columns(back_url, tmp_path) == await _columns(pg_url, tmp_path)
    finally:
        await target.close()
        await back.close()


async def test_db_migrate_prepares_an_empty_database(
    settings: Settings, pg_cluster: PgCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = await pg_cluster.fresh_database(migrated=False)
    assert await videobot("db", "migrate", "--url", url) == 0
    assert f"schema {PG_LATEST} (was 0)" in capsys.readouterr().out
    assert await videobot("db", "migrate", "--url", url) == 0
    assert "(up to date)" in capsys.readouterr().out
    assert await videobot("db", "migrate") == 0  # VIDEOBOT_DATABASE_URL unset: SQLite in the data dir
    out = capsys.readouterr().out
    assert "videobot.sqlite3: schema" in out and "(was 0)" in out
    await pg_cluster.drop(url)
