"""Rate budgets for status messages: one scheduler per platform limit, shared by every
message that changed.

Slack allows about 50 `chat.update` calls a minute per workspace for the whole app, not
per message; Discord limits per channel and per webhook. A per-message timer cannot keep
four jobs within a workspace's budget. Here each limit is one `RateScheduler`: messages
offer their newest state (replacing an unsent older one), the scheduler spends its budget
on them in turn, final states first, and a 429 makes it slower instead of retrying blindly.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

P = TypeVar("P")


class Throttled(Exception):
    """Raised by a send that the platform refused with a 429: nothing was changed."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__(f"throttled (retry after {retry_after})")
        self.retry_after = retry_after


@dataclass
class _Pending(Generic[P]):
    payload: P
    final: bool


class RateScheduler(Generic[P]):
    """At most `rate` sends per `per` seconds for one limit; newest state per message wins."""

    def __init__(
        self,
        send: Callable[[Hashable, P], Awaitable[None]],
        *,
        rate: float,
        per: float = 60.0,
        name: str = "",
        min_rate: float | None = None,
    ) -> None:
        self._send = send
        self.name = name
        self.max_rate = rate
        self.rate = rate
        self.per = per
        self.min_rate = min_rate if min_rate is not None else max(rate / 8, 1.0)
        self._pending: OrderedDict[Hashable, _Pending[P]] = OrderedDict()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._next_at = 0.0
        self._closed = False
        #: Sends made, for tests and benchmarks: (monotonic time, message key).
        self.sent: list[tuple[float, Hashable]] = []

    @property
    def interval(self) -> float:
        return self.per / self.rate

    def offer(self, key: Hashable, payload: P, *, final: bool = False) -> None:
        """The newest state of one message; an unsent older state of it is dropped."""
        if self._closed:
            return
        previous = self._pending.pop(key, None)
        # A final state stays final even if a (stale) non-final one comes after it.
        self._pending[key] = _Pending(payload, final or (previous.final if previous else False))
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"pacing-{self.name}")

    def pending(self) -> int:
        return len(self._pending)

    async def drain(self) -> None:
        """Wait until every offered state was sent (or given up on)."""
        await self._idle.wait()

    async def close(self, *, flush: bool = False) -> None:
        if flush:
            await self.drain()
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._pending.clear()
        self._idle.set()

    def _take(self) -> tuple[Hashable, _Pending[P]]:
        # Final states first: a finished job's last word is never starved by progress ticks.
        for key, item in self._pending.items():
            if item.final:
                return key, self._pending.pop(key)
        return self._pending.popitem(last=False)

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self._next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue  # states may have changed while waiting: take the newest
            key, item = self._take()
            self._next_at = time.monotonic() + self.interval
            try:
                await self._send(key, item.payload)
                self.sent.append((time.monotonic(), key))
                # Earned back slowly after a slowdown (additive increase).
                self.rate = min(self.max_rate, self.rate + self.max_rate / 20)
            except Throttled as exc:
                # Put it back unless a newer state arrived meanwhile; slow down (multiplicative decrease).
                if key not in self._pending:
                    self._pending[key] = item
                    self._pending.move_to_end(key, last=False)
                self.rate = max(self.min_rate, self.rate / 2)
                wait = exc.retry_after if exc.retry_after is not None else self.interval
                self._next_at = time.monotonic() + max(wait, self.interval)
                log.info("%s: throttled; %.1f/min now, next send in %.1fs", self.name, self.rate * 60 / self.per, wait)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("%s: a status update failed; the next state will be sent", self.name, exc_info=True)


class SchedulerPool(Generic[P]):
    """One scheduler per limit key (a workspace, a channel), made on first use."""

    def __init__(self, factory: Callable[[Hashable], RateScheduler[P]]) -> None:
        self._factory = factory
        self._schedulers: dict[Hashable, RateScheduler[P]] = {}

    def get(self, limit_key: Hashable) -> RateScheduler[P]:
        scheduler = self._schedulers.get(limit_key)
        if scheduler is None:
            scheduler = self._schedulers[limit_key] = self._factory(limit_key)
        return scheduler

    async def drain(self) -> None:
        await asyncio.gather(*(s.drain() for s in list(self._schedulers.values())))

    async def close(self, *, flush: bool = False) -> None:
        await asyncio.gather(*(s.close(flush=flush) for s in list(self._schedulers.values())))
        self._schedulers.clear()
