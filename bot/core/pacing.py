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
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

P = TypeVar("P")

#: Sends a scheduler remembers in `sent`.
SENT_KEPT = 1000
#: A scheduler with nothing pending for this long is dropped from its pool (a channel nobody
#: uses any more, a finished interaction's webhook); the next offer makes a fresh one.
IDLE_SECONDS = 600.0


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
        #: The latest sends, for tests and benchmarks: (monotonic time, message key). Bounded: a
        #: scheduler of a busy workspace lives as long as the process.
        self.sent: deque[tuple[float, Hashable]] = deque(maxlen=SENT_KEPT)
        #: When it last had something to do (an offer or a send), for retiring idle schedulers.
        self.active_at = time.monotonic()

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
        self.active_at = time.monotonic()
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"pacing-{self.name}")

    def pending(self) -> int:
        return len(self._pending)

    def idle_for(self) -> float:
        """Seconds since it last had work; 0 while anything is pending or being sent."""
        if not self._idle.is_set():
            return 0.0
        return time.monotonic() - self.active_at

    def retire(self) -> None:
        """Stop at once; only for a scheduler with nothing pending (its pool checked)."""
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

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
                self.active_at = time.monotonic()
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
    """One scheduler per limit key (a workspace, a channel, a webhook), made on first use.

    Keys come and go (channels, one webhook per Discord interaction), so schedulers that had
    nothing to do for `idle_seconds` are dropped (checked as new keys are used), and a key
    known to be done with can be retired at once.
    """

    def __init__(self, factory: Callable[[Hashable], RateScheduler[P]], *, idle_seconds: float = IDLE_SECONDS) -> None:
        self._factory = factory
        self._schedulers: dict[Hashable, RateScheduler[P]] = {}
        self.idle_seconds = idle_seconds
        self._swept_at = time.monotonic()

    def __len__(self) -> int:
        return len(self._schedulers)

    def get(self, limit_key: Hashable) -> RateScheduler[P]:
        scheduler = self._schedulers.get(limit_key)
        if scheduler is None:
            self.sweep()
            scheduler = self._schedulers[limit_key] = self._factory(limit_key)
        return scheduler

    def find(self, limit_key: Hashable) -> RateScheduler[P] | None:
        return self._schedulers.get(limit_key)

    def sweep(self, *, force: bool = False) -> int:
        """Drop schedulers idle for `idle_seconds`; looks at most every quarter of that."""
        now = time.monotonic()
        if not force and now - self._swept_at < self.idle_seconds / 4:
            return 0
        self._swept_at = now
        idle = [key for key, s in self._schedulers.items() if s.idle_for() >= self.idle_seconds]
        for key in idle:
            self._schedulers.pop(key).retire()
        if idle:
            log.debug("retired %d idle rate scheduler(s); %d left", len(idle), len(self._schedulers))
        return len(idle)

    async def retire(self, limit_key: Hashable) -> None:
        """A limit that is done with (a webhook whose token expired): its scheduler sends what is
        pending, then goes. An offer after this gets a new scheduler."""
        scheduler = self._schedulers.get(limit_key)
        if scheduler is None:
            return
        await scheduler.drain()
        # No await between the check and the removal: an offer made meanwhile keeps it alive.
        if scheduler.pending() == 0 and self._schedulers.get(limit_key) is scheduler:
            del self._schedulers[limit_key]
            await scheduler.close()

    async def drain(self) -> None:
        await asyncio.gather(*(s.drain() for s in list(self._schedulers.values())))

    async def close(self, *, flush: bool = False) -> None:
        await asyncio.gather(*(s.close(flush=flush) for s in list(self._schedulers.values())))
        self._schedulers.clear()
