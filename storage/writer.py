"""One writer for the SQLite store, with group commit.

Every write is a small synchronous function of a `sqlite3.Connection`, run on one
dedicated thread. Writes that arrive while a batch is being committed wait and go
together in the next transaction, each inside its own SAVEPOINT, so one write that
raises (a fenced update whose lease was lost) rolls back alone while the rest commit.
A burst of 500 submissions is then a handful of commits and thread hops instead of
thousands of round trips queued behind the runner's writes.

A write, once queued, is carried out even if its caller is cancelled (a stop in the
middle of a write never cuts a transaction in half); `close()` lets queued writes
finish before the connection closes.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

WriteFn = Callable[[sqlite3.Connection], Any]


from storage.errors import StoreClosed

__all__ = ["GroupWriter", "StoreClosed", "WriteFn"]


class GroupWriter:
    def __init__(self, path: Path, *, max_batch: int = 256) -> None:
        self.path = path
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="videobot-store-writer")
        self._conn: sqlite3.Connection | None = None
        self._queue: list[tuple[WriteFn, asyncio.Future[Any]]] = []
        #: Every write not yet answered (queued or in the batch being committed).
        self._outstanding: set[asyncio.Future[Any]] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Transactions committed and writes carried, for benchmarks.
        self.commits = 0
        self.writes = 0

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        self._conn = conn

    async def run(self, fn: WriteFn) -> Any:
        """Queue `fn` for the next transaction and wait for its result (or its exception)."""
        if self._closed:
            raise StoreClosed("the job store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._outstanding.add(future)
        future.add_done_callback(self._outstanding.discard)
        self._queue.append((fn, future))
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="store-writer")
        return await asyncio.shield(future)

    async def _loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                results = await asyncio.shield(loop.run_in_executor(self._executor, self._apply, [fn for fn, _ in batch]))
            except BaseException as exc:  # the thread itself failed: every write of the batch hears it
                results = [(False, exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))] * len(batch)
                if not isinstance(exc, Exception):
                    for (_, future), (_, error) in zip(batch, results):
                        if not future.done():
                            future.set_exception(error)
                    raise
            for (_, future), (ok, value) in zip(batch, results):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _apply(self, fns: list[WriteFn]) -> list[tuple[bool, Any]]:
        conn = self._conn
        if conn is None:
            return [(False, StoreClosed("the job store is not open"))] * len(fns)
        out: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(False, exc)] * len(fns)
        try:
            for fn in fns:
                conn.execute("SAVEPOINT write")
                try:
                    value = fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO write")
                    conn.execute("RELEASE write")
                    out.append((False, exc))
                else:
                    conn.execute("RELEASE write")
                    out.append((True, value))
            conn.execute("COMMIT")
        except Exception as exc:  # the commit itself failed: nothing of the batch was written
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [(False, exc)] * len(fns)
        self.commits += 1
        self.writes += len(fns)
        return out

    async def close(self) -> None:
        """Carry out what is queued, then close. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        while self._outstanding:
            await asyncio.gather(*list(self._outstanding), return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        loop = asyncio.get_running_loop()
        if self._conn is not None:
            await loop.run_in_executor(self._executor, self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
