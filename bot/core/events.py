"""Progress events from the runner to whoever renders them (adapters, the CLI).

Each subscriber gets its own queue and task, so a slow one (a rate-limited chat
API) never holds up the runner or the other subscribers.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.core.models import ProgressEvent

log = logging.getLogger(__name__)

Handler = Callable[[ProgressEvent], Awaitable[None]]
Filter = Callable[[ProgressEvent], bool]


class Subscription:
    def __init__(self, handler: Handler, accept: Filter | None) -> None:
        self.handler = handler
        self.accept = accept
        self.queue: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                if event is None:
                    return
                await self.handler(event)
            except Exception:
                log.exception("event handler failed for %s %s", event.kind if event else "?", event.job.id if event else "")
            finally:
                self.queue.task_done()


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []

    def subscribe(self, handler: Handler, accept: Filter | None = None) -> Subscription:
        sub = Subscription(handler, accept)
        sub.task = asyncio.get_running_loop().create_task(sub._pump())
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            sub.queue.put_nowait(None)

    def publish(self, event: ProgressEvent) -> None:
        for sub in self._subs:
            if sub.accept is None or sub.accept(event):
                sub.queue.put_nowait(event)

    async def drain(self) -> None:
        """Wait until every subscriber has handled what was published so far."""
        await asyncio.gather(*(sub.queue.join() for sub in list(self._subs)))

    async def close(self) -> None:
        await self.drain()
        subs = list(self._subs)
        for sub in subs:
            self.unsubscribe(sub)
        await asyncio.gather(*(s.task for s in subs if s.task), return_exceptions=True)
