"""One LISTEN connection per store, outside the pool, that comes back when it is dropped.

`wait(timeout)` returns when a NOTIFY arrived since the last return, when the connection was
(re)made (notifications sent while nobody listened are lost, so the caller must read the
signals table by id: returning tells it to), when the connection was lost, or at timeout.
Notifications carry only the signal id; the row is the truth.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)
#: Between attempts to reconnect a dropped listener (the caller's timeout bounds each wait anyway).
RECONNECT_DELAY = 0.5


class Listener:
    def __init__(self, dsn: str, channel: str, *, init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None) -> None:
        self._dsn = dsn
        self._channel = channel
        self._init = init
        self._conn: asyncpg.Connection | None = None
        self._woken = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closed = False
        self._next_attempt = 0.0
        #: Connections made (1 after the first; more after reconnects), for tests and logs.
        self.connects = 0
        self.notifications = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def server_pid(self) -> int | None:
        return self._conn.get_server_pid() if self.connected and self._conn is not None else None

    async def wait(self, timeout: float) -> None:
        if self._closed:
            await asyncio.sleep(min(timeout, 0.2))
            return
        if not self.connected:
            if await self._connect(timeout):
                return  # (re)connected: what was sent meanwhile is in the table, read it now
            if not self.connected:
                return
        try:
            await asyncio.wait_for(self._woken.wait(), timeout)
        except TimeoutError:
            return
        # Cleared only after a wake-up, so a NOTIFY that came while the caller was reading is not lost.
        self._woken.clear()

    async def _connect(self, timeout: float) -> bool:
        """True when a connection was made; sleeps a little (within `timeout`) after a failure."""
        async with self._lock:
            if self.connected:
                return False
            loop = asyncio.get_running_loop()
            delay = self._next_attempt - loop.time()
            if delay > 0:
                await asyncio.sleep(min(delay, timeout))
                if loop.time() < self._next_attempt:
                    return False
            try:
                conn = await asyncpg.connect(self._dsn)
                if self._init is not None:
                    await self._init(conn)
                await conn.add_listener(self._channel, self._notified)
                conn.add_termination_listener(self._terminated)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                self._next_attempt = loop.time() + RECONNECT_DELAY
                log.warning("signal listener: cannot connect (%s); retrying", exc)
                return False
            if self._closed:
                await conn.close()
                return False
            self._conn = conn
            self.connects += 1
            if self.connects > 1:
                log.info("signal listener reconnected; catching up from the signals table")
            self._woken.clear()
            return True

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.notifications += 1
        self._woken.set()

    def _terminated(self, conn: Any) -> None:
        if not self._closed:
            log.warning("signal listener: connection lost; reconnecting")
        self._woken.set()  # the waiter returns, and the next wait reconnects

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=2)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()
        self._woken.set()
