"""Liveness (/healthz) and readiness (/readyz) of one process.

/healthz answers from the event loop itself: if it answers, the loop turns. /readyz asks
what this process needs to do its job: the database answers; a gateway's chat connections
are up; a process that runs jobs has a recent heartbeat row in the store (the row the other
processes and `videobot status` judge it by). The body names each check, never a value
from the configuration (no URL, token or path).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.core.heartbeat import ALIVE_INTERVALS

log = logging.getLogger(__name__)

#: A check that takes longer than this fails (a database that hangs is not ready).
CHECK_TIMEOUT = 3.0

Check = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass
class Readiness:
    """The checks of one process; run them all on every /readyz."""

    checks: dict[str, Check] = field(default_factory=dict)

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    async def run(self) -> tuple[bool, dict[str, Any]]:
        names = list(self.checks)
        results = await asyncio.gather(*(_timed(self.checks[n]) for n in names))
        report = {name: {"ok": ok, "detail": detail} for name, (ok, detail) in zip(names, results)}
        ready = all(ok for ok, _ in results)
        failing = [name for name, (ok, _) in zip(names, results) if not ok]
        return ready, {"status": "ready" if ready else "not ready", "failing": failing, "checks": report}


async def _timed(check: Check) -> tuple[bool, str]:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except TimeoutError:
        return False, f"no answer within {CHECK_TIMEOUT:g} s"
    except Exception as exc:
        # The kind of failure only: exception texts may carry a connection string.
        return False, f"{type(exc).__name__}"


def database_check(store: Any) -> Check:
    async def check() -> tuple[bool, str]:
        await store.last_signal_id()  # one cheap read on either backend
        return True, "answers"

    return check


def heartbeat_check(store: Any, worker_id: str, interval: float) -> Check:
    """This process's row in the workers table is fresh (what other processes see of it)."""

    async def check() -> tuple[bool, str]:
        rows = await store.workers()
        mine = next((r for r in rows if r.id == worker_id), None)
        if mine is None:
            return False, "no heartbeat row for this process"
        age = time.time() - mine.last_seen
        if age > ALIVE_INTERVALS * interval:
            return False, f"last heartbeat {age:.0f} s ago"
        return True, f"last heartbeat {age:.0f} s ago"

    return check


def adapters_check(adapters: Sequence[Any]) -> Check:
    async def check() -> tuple[bool, str]:
        down = [a.platform for a in adapters if not await connected(a)]
        if down:
            return False, "not connected: " + ", ".join(down)
        return True, "connected: " + ", ".join(a.platform for a in adapters)

    return check


async def connected(adapter: Any) -> bool:
    """Whether a chat adapter's connection is up, as far as its client library says."""
    own = getattr(adapter, "connected", None)
    if callable(own):
        result = own()
        return bool(await result) if asyncio.iscoroutine(result) else bool(result)
    if getattr(adapter, "closed", False) is True:
        return False
    client = getattr(adapter, "client", None)
    if adapter.platform == "discord" and client is not None and hasattr(client, "is_ready"):
        # Ready once, and the gateway websocket open now (discord.py reconnects behind is_ready()).
        ws = getattr(client, "ws", None)
        return bool(client.is_ready()) and not client.is_closed() and ws is not None and bool(ws.open)
    socket = getattr(adapter, "_socket", None)
    if socket is not None:  # Slack Socket Mode
        return bool(await socket.client.is_connected())
    return True  # served over HTTP (Slack's requests come to us), or the console
