"""The row as both backends store it: typed state, the columns copied out of it, privacy and
viewer filters, media paths, the migration that added them, and the storage layer's imports.
Each test runs on every backend (tests/stores.py)."""
from __future__ import annotations

import ast
import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.contract import Store
from storage.db import migrations
from storage.gallery import GalleryQuery
from storage.models import JobState, JobStatus
from storage.open import is_postgres, open_store, sqlite_path
from storage.spend import OverBudget, QueueFull, QueueLimit, SpendLimit
from tests.stores import BACKENDS, make_job, raw_sql

STORAGE = Path(__file__).resolve().parents[2] / "storage"


# --- typed state and the columns copied out of it -----------------------------------------------------


async def test_state_is_typed_keeps_unknown_keys_and_fills_its_columns(store: Store, store_url: str, tmp_path: Path) -> None:
    await store.create(make_job("s1", state={"story_scene": "2", "image_step_cost": 0.04, "from_the_future": {"x": [1]}}))
    job = await store.get("s1")
    assert job is not None and isinstance(job.state, JobState)
    assert job.state.story_scene == 2 and job.state["image_step_cost"] == 0.04  # "2" read as the int it means
    assert job.state.get("from_the_future") == {"x": [1]} and "plan" not in job.state
    assert await raw_sql(store_url, tmp_path, "SELECT story_scene, image_step_cost FROM jobs WHERE id = ?", "s1") == [(2, 0.04)]
    # A write of the state rewrites the columns: a key gone is NULL again.
    job = await store.update("s1", state={**job.state, "image_step_cost": None, "story_scene": 3})
    assert job.state.story_scene == 3
    assert await raw_sql(store_url, tmp_path, "SELECT story_scene, image_step_cost FROM jobs WHERE id = ?", "s1") == [(3, None)]


async def test_a_state_value_an_older_videobot_wrote_differently_is_kept_aside_not_fatal(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    await store.create(make_job("odd"))
    odd = '{"blocklist": "one word", "story_attempt": 2}'
    await raw_sql(store_url, tmp_path, "UPDATE jobs SET state_json = " + ("?::jsonb" if is_postgres(store_url) else "?"), odd)
    job = await store.get("odd")
    assert job is not None and job.state.story_attempt == 2 and job.state.blocklist is None
    assert job.state["unreadable"] == {"blocklist": "one word"}


async def test_the_gallery_and_the_spend_rules_read_the_columns(store: Store, store_url: str, tmp_path: Path) -> None:
    """Neither dialect reads $.story_scene / $.image_step_cost out of JSON any more: the columns decide."""
    now = time.time()
    await store.create(make_job("scene", created_at=now, cost_estimate=5.0, state={"story_scene": 1}))
    await store.create(make_job("failed", created_at=now, cost_estimate=5.0, state={"image_step_cost": 0.25}))
    await store.update("failed", status=JobStatus.FAILED)
    assert [j.id for j in await store.gallery(GalleryQuery(scoped=False))] == ["failed"]
    assert await store.spend_since(platform="cli", since=now - 1) == pytest.approx(0.25)
    # The JSON says otherwise, the columns win.
    await raw_sql(store_url, tmp_path, "UPDATE jobs SET story_scene = NULL, image_step_cost = 1.0")
    assert {j.id for j in await store.gallery(GalleryQuery(scoped=False))} == {"scene", "failed"}
    assert await store.spend_since(platform="cli", since=now - 1) == pytest.approx(6.0)


@pytest.fixture(params=BACKENDS)
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty (unmigrated) database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.sqlite3'}"
        return
    cluster = request.getfixturevalue("pg_cluster")
    url: str = await cluster.fresh_database(migrated=False)
    yield url
    await cluster.drop(url)


async def test_an_older_database_is_migrated_and_its_columns_filled_from_the_json(empty_url: str, tmp_path: Path) -> None:
    """A database as the previous videobot left it (SQLite schema 6, PostgreSQL 2) with a scene and an
    image step's cost in state_json: after the migration they are columns, and no job is private."""
    store_url = empty_url
    scene_state, failed_state = '{"story_scene": 2, "story_attempt": 1}', '{"image_step_cost": 0.3}'
    insert = (
        "INSERT INTO jobs (id, kind, platform, user_id, prompt, params_json, pipeline, status, state_json, created_at) "
        "VALUES (?, 'generate', 'cli', 'u', 'p', '{\"seconds\": 4, \"size\": \"1x1\", \"seed\": 1}', 'local', ?, ?, ?)"
    )
    if is_postgres(store_url):
        import asyncpg

        from storage.pg.schema import VERSION_TABLE
        from storage.pg.schema import migrations as pg_migrations

        conn = await asyncpg.connect(store_url)
        try:
            for _, sql in pg_migrations()[:2]:
                await conn.execute(sql)
            await conn.execute(f"CREATE TABLE {VERSION_TABLE} (version INTEGER NOT NULL); INSERT INTO {VERSION_TABLE} VALUES (2)")
        finally:
            await conn.close()
        cast = "?::jsonb"
    else:
        path = sqlite_path(store_url, tmp_path)
        assert path is not None
        with sqlite3.connect(path) as conn:
            for _, sql in migrations()[:6]:
                conn.executescript(sql)
            conn.execute("PRAGMA user_version=6")
        cast = "?"
    numbered = insert.replace("?, ?)", f"{cast}, ?)")
    await raw_sql(store_url, tmp_path, numbered, "old-scene", "completed", scene_state, time.time())
    await raw_sql(store_url, tmp_path, numbered, "old-failed", "failed", failed_state, time.time())
    store = await open_store(store_url, data_dir=tmp_path)
    try:
        rows = await raw_sql(store_url, tmp_path, "SELECT id, story_scene, image_step_cost, private FROM jobs ORDER BY id")
        assert [(r[0], r[1], r[2], bool(r[3])) for r in rows] == [("old-failed", None, 0.3, False), ("old-scene", 2, None, False)]
        scene = await store.get("old-scene")
        assert scene is not None and scene.state.story_scene == 2 and scene.state.story_attempt == 1 and not scene.private
    finally:
        await store.close()


# --- privacy and viewers ----------------------------------------------------------------------------------


async def test_private_jobs_are_shown_to_their_owner_and_admins_only(store: Store) -> None:
    now = time.time()
    await store.create(make_job("pub", user="ann", platform="slack", workspace="T", created_at=now - 3))
    await store.create(make_job("ann-dm", user="ann", platform="slack", workspace="T", created_at=now - 2, private=True))
    await store.create(make_job("bob-dm", user="bob", platform="slack", workspace="T", created_at=now - 1, private=True))
    await store.update("bob-dm", status_message_id="M1")

    async def gallery(**viewer: object) -> list[str]:
        return [j.id for j in await store.gallery(GalleryQuery(platform="slack", workspace_id="T", **viewer))]  # type: ignore[arg-type]

    assert await gallery() == ["pub"]  # nobody named: no private job
    assert await gallery(viewer_user="ann") == ["ann-dm", "pub"]
    assert await gallery(viewer_user="bob") == ["bob-dm", "pub"]
    assert await gallery(viewer_user="cat", viewer_admin=True) == ["bob-dm", "ann-dm", "pub"]
    facets = await store.gallery_facets(GalleryQuery(platform="slack", workspace_id="T", viewer_user="ann"))
    assert [u for u, _ in facets["users"]] == ["ann"]  # bob has only a private job: not offered to ann

    assert [j.id for j in await store.list(viewer_user="ann", viewer_admin=False)] == ["ann-dm", "pub"]
    assert [j.id for j in await store.list()] == ["bob-dm", "ann-dm", "pub"]  # the runner's view: everything
    assert await store.get("bob-dm", viewer_user="ann", viewer_admin=False) is None
    assert (await store.get("bob-dm", viewer_user="ann", viewer_admin=True)) is not None
    assert (await store.get("bob-dm", viewer_user="bob", viewer_admin=False)) is not None
    assert [j.id for j in await store.find_prefix("bob", 5, viewer_user="ann", viewer_admin=False)] == []
    assert [j.id for j in await store.find_prefix("bob", 5, viewer_user="bob", viewer_admin=False)] == ["bob-dm"]
    assert await store.find_by_message("slack", "M1", viewer_user="ann", viewer_admin=False) is None
    assert (await store.find_by_message("slack", "M1")) is not None
    job = await store.get("ann-dm")
    assert job is not None and job.private is True
    assert (await store.update("ann-dm", private=False)).private is False


async def test_a_job_made_in_a_private_place_is_stored_private(store: Store) -> None:
    """Adapters say what kind of place a conversation is in `origin.extra["place"]`."""
    await store.create(make_job("dm", extra={"place": "direct"}))
    await store.create(make_job("grp", extra={"place": "private"}))
    await store.create(make_job("pub", extra={"place": "public"}))
    assert [(j.id, j.private) for j in await store.list()][::-1] == [("dm", True), ("grp", True), ("pub", False)]


# --- media paths --------------------------------------------------------------------------------------------


async def test_media_paths_are_relative_in_the_row_and_absolute_in_every_job_read(store_url: str, tmp_path: Path) -> None:
    media = tmp_path / "media"
    store = await open_store(store_url, data_dir=tmp_path, media_root=media)
    try:
        video, image = media / "j1" / "video.mp4", media / "j1" / "image.png"
        job = make_job(
            "j1", state={"image_step_path": str(image), "reuse_files": {"1": str(video)}, "other": "keep/me"}, output_path=str(video)
        )
        stored = await store.create(job)
        assert stored.output_path == str(video)
        raw = await raw_sql(store_url, tmp_path, "SELECT output_path, state_json FROM jobs WHERE id = ?", "j1")
        assert raw[0][0] == "j1/video.mp4" and "j1/image.png" in str(raw[0][1]) and str(media) not in str(raw[0][1])
        got = await store.get("j1")
        assert got is not None and got.output_path == str(video) and got.state.image_step_path == str(image)
        assert got.state.reuse_files == {"1": str(video)} and got.state["other"] == "keep/me"
        updated = await store.update("j1", thumbnail_path=str(media / "j1" / "thumb.jpg"))
        assert updated.thumbnail_path == str(media / "j1" / "thumb.jpg")
        assert (await raw_sql(store_url, tmp_path, "SELECT thumbnail_path FROM jobs WHERE id = ?", "j1"))[0][0] == "j1/thumb.jpg"
        assert [j.output_path for j in await store.list()] == [str(video)]
        # A confirmation waiting in the store: relative inside, absolute to whoever reads it.
        await store.put_pending("tok", make_job("p1", output_path=str(video)), expires_at=time.time() + 60)
        raw = await raw_sql(store_url, tmp_path, "SELECT job_json FROM pending_spends")
        assert str(media) not in str(raw[0][0])
        peeked = await store.peek_pending("tok")
        assert peeked is not None and peeked.job.output_path == str(video)
        taken, state = await store.take_pending("tok", to="confirmed", platform="cli", user_id="u")
        assert state == "pending" and taken is not None and taken.output_path == str(video)
    finally:
        await store.close()
    # Another machine mounts the volume elsewhere: the same row, under its own directory.
    there = await open_store(store_url, data_dir=tmp_path, media_root=tmp_path / "mnt")
    try:
        got = await there.get("j1")
        assert got is not None and got.output_path == str((tmp_path / "mnt" / "j1" / "video.mp4").resolve())
    finally:
        await there.close()


# --- submissions at once (PostgreSQL group-commits them): each one's limits still hold -----------------------


async def test_a_burst_of_submissions_keeps_every_limit_and_fails_only_the_bad_one(store: Store) -> None:
    since = time.time() - 1
    queue = QueueLimit("slack", "greedy", 4)
    money = [SpendLimit("slack", 1.0, since, "this workspace's", workspace_id="T")]
    attempts = [
        store.create(make_job(f"b{i}", platform="slack", user="greedy", workspace="T", cost_estimate=0.1), queue_limit=queue)
        for i in range(12)
    ] + [
        store.create(make_job(f"m{i}", platform="slack", user=f"u{i}", workspace="T", cost_estimate=0.3), spend_limits=money)
        for i in range(8)
    ]  # fmt: skip
    results = await asyncio.gather(*attempts, return_exceptions=True)
    queued, spent = results[:12], results[12:]
    assert sum(not isinstance(r, BaseException) for r in queued) == 4 and sum(isinstance(r, QueueFull) for r in queued) == 8
    # The greedy user's 0.1s count against the workspace too, in arrival order: 0.4 + two of 0.3 fit in 1.0.
    assert sum(not isinstance(r, BaseException) for r in spent) == 2 and sum(isinstance(r, OverBudget) for r in spent) == 6
    assert await store.spend_since(platform="slack", since=since, workspace_id="T") == pytest.approx(1.0)
    # A duplicate id in a burst fails alone; the others are written.
    results = await asyncio.gather(*(store.create(make_job(job_id)) for job_id in ("d1", "b0", "d2")), return_exceptions=True)
    assert not isinstance(results[0], BaseException) and isinstance(results[1], Exception) and not isinstance(results[2], BaseException)
    assert await store.get("d1") is not None and await store.get("d2") is not None


# --- layering --------------------------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """Every module a file imports: top level, inside functions, under TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_storage_imports_neither_bot_nor_providers_and_its_errors_nothing_of_the_project() -> None:
    offenders = {
        f"{path.relative_to(STORAGE.parent)}: {name}"
        for path in STORAGE.rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in ("bot", "providers")
    }
    assert not offenders
    project = {"storage", "bot", "providers", "bench", "tests"}
    assert not {name for name in _imports(STORAGE / "errors.py") if name.split(".")[0] in project}


def test_job_state_reads_and_writes_like_the_dict_it_replaces() -> None:
    """Callers written against the dict keep working while they move to attributes."""
    state = JobState.model_validate({"story_scene": 2, "kept": {"a": 1}})
    assert state.get("story_scene") == 2 and state["kept"] == {"a": 1} and state.get("plan") is None and "plan" not in state
    assert {**state, "moderated": "off"} == {"story_scene": 2, "kept": {"a": 1}, "moderated": "off"}
    state["ab"] = {"split": "s", "arm": "a"}
    state.setdefault("blocklist", ["x"])
    state.setdefault("blocklist", ["y"])
    del state["kept"]
    assert dict(state) == {"story_scene": 2, "ab": {"split": "s", "arm": "a"}, "blocklist": ["x"]} == state
    assert state.model_dump_json() == '{"story_scene":2,"blocklist":["x"],"ab":{"split":"s","arm":"a"}}'  # set keys only
    with pytest.raises(ValueError):
        state["story_scene"] = "not a number"  # typed
    job = make_job("j")
    job.state = {"story_scene": 1}  # a dict assigned (or given to model_copy) becomes a JobState
    assert isinstance(job.state, JobState) and job.state.story_scene == 1
    assert isinstance(job.model_copy(update={"state": {"plan": {}}}).state, JobState)
