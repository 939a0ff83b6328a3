"""Gateway and worker processes on one database, for the scale-out tests and benchmark.

`RoleProcess` is the chaos harness's `BotProcess` started as `videobot run --role ROLE`.
A gateway serves Slack in HTTP mode on its port (ready when the port accepts); a worker
serves nothing (ready when it prints "worker ready"). `TakenSampler` reads the database
every few milliseconds in a thread and keeps the most jobs ever taken at once (leased and
unfinished), overall and per user: what the caps promise across all workers.
"""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from tests.chaos.process import BotDied, BotProcess


class RoleProcess(BotProcess):
    def __init__(self, env: dict[str, str], *, role: str, work_dir: Path, name: str, port: int = 0) -> None:
        super().__init__({**env, "VIDEOBOT_ROLE": role}, port=port, work_dir=work_dir, name=name)
        self.role = role

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        assert not self.alive, "already running"
        self.stopped = False
        self.starts += 1
        log = self.work_dir / f"{self.name}-{self.starts:03d}.log"
        self.logs.append(log)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            self.started_at, self.started_wall = time.monotonic(), time.time()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "run", "--role", self.role], cwd=self.work_dir, env=self.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

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


class TakenSampler:
    """The most jobs ever taken at once (non-terminal with a live lease), overall and per user."""

    SQL = (
        "SELECT platform, workspace_id, user_id FROM jobs WHERE lease_owner IS NOT NULL AND lease_until > ? "
        "AND status NOT IN ('completed', 'failed', 'cancelled')"
    )

    def __init__(self, db: Path, interval: float = 0.005) -> None:
        self.db = db
        self.interval = interval
        self.max_total = 0
        self.max_per_user = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taken-sampler", daemon=True)

    def __enter__(self) -> TakenSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    if not self.db.exists():
                        time.sleep(self.interval)
                        continue
                    conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
                rows = conn.execute(self.SQL, (time.time(),)).fetchall()
            except sqlite3.OperationalError:
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(self.interval)
                continue
            self.samples += 1
            self.max_total = max(self.max_total, len(rows))
            if rows:
                self.max_per_user = max(self.max_per_user, max(Counter(rows).values()))
            time.sleep(self.interval)
        if conn is not None:
            conn.close()


def runner_pids(db: Path, job_id: str) -> set[int]:
    """The pids of the runners that wrote a job's events (job_events.runner: host~boot/pid/start/token)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT runner FROM job_events WHERE job_id = ? AND runner IS NOT NULL", (job_id,)).fetchall()
    return {int(r[0].rsplit("/", 3)[1]) for r in rows}
