"""Reading the bot's SQLite database from the test process, read-only, while the bot writes it.

The harness watches job states here to time its kills, and reads the event log to check
it afterwards. It opens the file with `mode=ro` (it can never write), and each query
sees the latest committed state (WAL readers never block the writer).
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

#: The forward order of job states; the three endings share the last rank.
STATES = ("queued", "submitting", "running", "downloading", "delivering")
TERMINAL = ("completed", "failed", "cancelled")
RANK = {**{s: i for i, s in enumerate(STATES)}, **{s: len(STATES) for s in TERMINAL}}


@dataclass(frozen=True)
class JobRow:
    id: str
    prompt: str
    pipeline: str
    status: str
    progress: int
    remote_id: str | None
    status_message_id: str | None
    result_message_id: str | None
    error_code: str | None
    error_message: str | None
    updated_at: float | None
    created_at: float

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class EventRow:
    at: float
    status: str
    progress: int | None
    detail: str | None


_JOB_COLUMNS = (
    "id, prompt, pipeline, status, progress, remote_id, status_message_id, result_message_id, "
    "error_code, error_message, updated_at, created_at"
)


class DbView:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is None:
            if not self.path.exists():
                return None
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5, check_same_thread=False)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        for attempt in range(3):
            conn = self._connect()
            if conn is None:
                return []
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                # Before the first migration ran there is no table yet; a killed writer may leave a
                # moment where the read-only reader cannot map the WAL index: reopen and ask again.
                self.close()
                if "no such table" in str(exc) or attempt == 2:
                    if "no such table" in str(exc):
                        return []
                    raise
        return []

    def jobs(self) -> list[JobRow]:
        return [JobRow(*row) for row in self._query(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY created_at, rowid")]  # type: ignore[arg-type]

    def sent_without_id(self) -> set[str]:
        """Jobs whose create was sent (the bot writes `submit_sent_to` just before it) and whose
        remote id is not stored: read right after a kill, the jobs whose create's answer died with it."""
        rows = self._query("SELECT id, state_json FROM jobs WHERE status = 'submitting' AND remote_id IS NULL")
        found = set()
        for job_id, state in rows:
            parsed = json.loads(state) if isinstance(state, (str, bytes)) else state
            if isinstance(parsed, dict) and parsed.get("submit_sent_to"):
                found.add(str(job_id))
        return found

    def events(self, job_id: str) -> list[EventRow]:
        rows = self._query("SELECT at, status, progress, detail FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))
        return [EventRow(*row) for row in rows]  # type: ignore[arg-type]


def backward_moves(events: list[EventRow]) -> list[str]:
    """What is wrong with an event log that must only move forward.

    Allowed: a repeated state (an event with a detail, such as "image step done"), and the
    documented moves back to `submitting` for a retry or a fallback, said in the detail.
    Never allowed: any other step back, or a change after an ending.
    """
    problems = []
    rank, status = -1, None
    for event in events:
        if status in TERMINAL and event.status != status:
            problems.append(f"{status} -> {event.status} after the job had ended ({event.detail or 'no detail'})")
            continue
        new = RANK.get(event.status)
        if new is None:
            problems.append(f"unknown state {event.status!r}")
            continue
        if new < rank:
            detail = (event.detail or "").lower()
            if not (event.status == "submitting" and ("retry" in detail or "fallback" in detail)):
                problems.append(f"{status} -> {event.status} ({event.detail or 'no detail'})")
        rank, status = new, event.status
    return problems
