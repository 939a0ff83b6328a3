"""Keeps full garbage collections off the command path.

A bot process holds a large, long-lived heap (modules, pydantic schemas, the chat client's
caches, every job in flight). CPython's full (generation 2) collection walks all of it: with
200 jobs in flight it measured 113 ms, and it lands wherever an allocation tips the threshold,
typically inside a burst of commands, which then miss their acknowledgement budget.

So the long-lived heap is frozen (moved out of the collector's view, `gc.freeze`) once the
process has started, and again every `refreeze_every` seconds so what settled since joins it.
Objects that die after freezing are still freed by reference counting; only reference cycles
among frozen objects wait for the full pass that runs every `full_every` seconds.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)


class HeapKeeper:
    def __init__(self, *, refreeze_every: float = 30.0, full_every: float = 900.0) -> None:
        self.refreeze_every = refreeze_every
        self.full_every = full_every
        self._task: asyncio.Task[None] | None = None
        self._last_full = time.monotonic()

    def settle(self) -> None:
        """One full collection, then freeze what survived (after start-up)."""
        gc.collect()
        gc.freeze()
        self._last_full = time.monotonic()

    def start(self) -> None:
        self.settle()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="heap-keeper")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refreeze_every)
            if time.monotonic() - self._last_full >= self.full_every:
                started = time.perf_counter()
                gc.unfreeze()
                self.settle()
                log.debug("full collection took %.0f ms", (time.perf_counter() - started) * 1000)
            else:
                gc.freeze()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        gc.unfreeze()
