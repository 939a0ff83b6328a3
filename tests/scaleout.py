"""Gateway and worker processes on one database, for the scale-out tests and benchmark.

`RoleProcess` is the chaos harness's `BotProcess` started as `videobot run --role ROLE`.
A gateway serves Slack in HTTP mode on its port (ready when the port accepts); a worker
serves nothing (ready when it prints "worker ready"). `TakenSampler` reads the database
every few milliseconds in a thread and keeps the most jobs ever taken at once (leased and
unfinished), overall and per user: what the caps promise across all workers. `StoreView`
reads either backend (SQLite or PostgreSQL) for both.
"""
from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from storage.open import is_postgres
from tests.chaos.db import _JOB_COLUMNS, DbView, JobRow
from tests.chaos.process import BotDied, BotProcess


class RoleProcess(BotProcess):
    def __init__(self, env: dict[str, str], *, role: str, work_dir: Path, name: str, port: int = 0) -> None:
        super().__init__({**env, "VIDEOBOT_ROLE": role}, port=port, work_dir=work_dir, name=name)
        self.role = role
        self.argv = ["run", "--role", role]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def ready(self, timeout: float = 30.0) -> float:
        if self.role == "gateway":
            return await super().ready(timeout)
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise BotDied(f"{self.name} exited with {self.returncode()} before it was ready:\n{self.log_tail()}")
            if self.logs and self.logs[-1].exists() and b"worker ready" in self.logs[-1].read_bytes():
                return time.monotonic() - self.started_at
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} was not ready within {timeout}s:\n{self.log_tail()}")
            await asyncio.sleep(0.02)


class StoreView(DbView):
    """The chaos harness's read-only database view, on either backend: SQLite (the file in the
    data dir) or PostgreSQL (its own asyncpg connection on a private event loop thread, so the
    test's checks can stay synchronous). `?` placeholders on both."""

    def __init__(self, url: str, data_dir: Path) -> None:
        super().__init__(data_dir / "videobot.sqlite3")
        self.url = url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pg: Any = None
        if is_postgres(url):
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name="pg-view", daemon=True).start()

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        if self._loop is None:
            return super()._query(sql, args)
        numbered = re.sub(r"\?", lambda _m, n=itertools.count(1): f"${next(n)}", sql)
        return asyncio.run_coroutine_threadsafe(self._fetch(numbered, args), self._loop).result(timeout=30)

    async def _fetch(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        import asyncpg

        from storage.pg.store import split_url

        if self._pg is None:
            self._pg = await asyncpg.connect(split_url(self.url)[0])
        return [tuple(r) for r in await self._pg.fetch(sql, *args)]

    def close(self) -> None:
        super().close()
        if self._loop is not None:
            if self._pg is not None:
                asyncio.run_coroutine_threadsafe(self._pg.close(), self._loop).result(timeout=10)
                self._pg = None
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None

    def jobs(self) -> list[JobRow]:
        if self._loop is None:
            return super().jobs()
        # PostgreSQL has no rowid: ties in created_at go by id instead.
        return [JobRow(*row) for row in self._query(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY created_at, id")]  # type: ignore[arg-type]

    def runner_pids(self, job_id: str) -> set[int]:
        """The pids of the runners that wrote a job's events (job_events.runner: host~boot/pid/start/token)."""
        rows = self._query("SELECT runner FROM job_events WHERE job_id = ? AND runner IS NOT NULL", (job_id,))
        return {int(str(r[0]).rsplit("/", 3)[1]) for r in rows}


class TakenSampler:
    """The most jobs ever taken at once (non-terminal with a live lease), overall and per user."""

    SQL = (
        "SELECT platform, workspace_id, user_id FROM jobs WHERE lease_owner IS NOT NULL AND lease_until > ? "
        "AND status NOT IN ('completed', 'failed', 'cancelled')"
    )

    def __init__(self, url: str, data_dir: Path, interval: float = 0.005) -> None:
        self.view = StoreView(url, data_dir)  # its own connection, used from the sampler's thread only
        self.interval = interval
        self.max_total = 0
        self.max_per_user = 0
        self.samples = 0
        #: The latest failed read (shown when the sampler took too few samples to judge the caps).
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taken-sampler", daemon=True)

    def __enter__(self) -> TakenSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.view.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # The view answers "no rows" when there is no database or table yet: that is not
                # a sample (a count of the table's rows comes back only when it was read).
                if not self.view._query("SELECT COUNT(*) FROM jobs"):
                    self.last_error = "no jobs table to read"
                    time.sleep(self.interval)
                    continue
                rows = self.view._query(self.SQL, (time.time(),))
            except Exception as exc:  # the database not there yet, a reader's hiccup: sample again
                self.last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(self.interval)
                continue
            self.samples += 1
            self.max_total = max(self.max_total, len(rows))
            if rows:
                self.max_per_user = max(self.max_per_user, max(Counter(rows).values()))
            time.sleep(self.interval)

    def require(self, at_least: int) -> None:
        """Fail unless the sampler read the database at least `at_least` times: a maximum of
        nothing proves no cap was kept."""
        assert self.samples >= at_least, (
            f"the sampler took {self.samples} samples (at least {at_least} needed to judge the caps); last error: {self.last_error}"
        )
