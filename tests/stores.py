"""The `store` fixture: one fresh store per test, on each backend (sqlite, postgres).

PostgreSQL runs on the throwaway cluster of tests/pg.py (skipped where no binaries exist,
never in CI). Also `make_job`, a job as the core would create it, with the fields tests vary.
"""
from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage.contract import Store
from storage.models import GenerateParams, Job, JobKind, JobStatus, Origin
from storage.open import is_postgres, open_store, sqlite_path

BACKENDS = ["sqlite", "postgres"]


def backend_url(request: pytest.FixtureRequest) -> str:
    """For a module's `database_url` fixture parametrised over BACKENDS: "" (SQLite in the data
    dir) or a fresh PostgreSQL database. Usage in a test module:

        @pytest.fixture(params=BACKENDS)
        def database_url(request): return backend_url(request)
    """
    if request.param == "sqlite":
        return ""
    url: str = request.getfixturevalue("pg_url")
    return url


async def raw_sql(url: str, data_dir: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """SQL run on its own connection, as another process would (`?` placeholders on both backends).
    `url` and `data_dir` as in the settings (an empty url: SQLite in the data dir)."""
    if is_postgres(url):
        import asyncpg

        from storage.pg.store import split_url

        numbered = re.sub(r"\?", lambda _m, n=iter(range(1, 1000)): f"${next(n)}", sql)
        conn = await asyncpg.connect(split_url(url)[0])
        try:
            return [tuple(r) for r in await conn.fetch(numbered, *args)]
        finally:
            await conn.close()
    path = sqlite_path(url, data_dir.resolve())
    assert path is not None
    with sqlite3.connect(path) as conn:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database on the parametrised backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'videobot.sqlite3'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(store_url, data_dir=tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


def make_job(
    job_id: str, *, user: str = "u", platform: str = "cli", workspace: str | None = None, created_at: float | None = None,
    cost_estimate: float | None = None, kind: JobKind = JobKind.GENERATE, parent: str | None = None, prompt: str = "a prompt",
    state: dict[str, Any] | None = None, extra: dict[str, Any] | None = None, user_name: str | None = None,
    status: JobStatus = JobStatus.QUEUED, private: bool = False, output_path: str | None = None,
) -> Job:
    return Job(
        id=job_id, parent_id=parent, kind=kind, prompt=prompt, pipeline="local", status=status,
        origin=Origin(platform=platform, workspace_id=workspace, channel_id="C", user_id=user, extra=extra or {}, user_name=user_name),
        params=GenerateParams(seconds=4, size="320x240", seed=1), cost_estimate=cost_estimate,
        state=state or {}, created_at=created_at if created_at is not None else time.time(), private=private,
        output_path=output_path,
    )  # fmt: skip
