"""A bound on how many submissions start in one turn of the event loop.

asyncio runs every callback that is ready at the start of a turn before it looks at timers or
sockets again. A burst of N submissions that become ready together (a gather, or N requests
readable at once) therefore ran N whole submissions in one turn: 500 of them held the loop for
32 ms, during which no acknowledgement, heartbeat or status edit could run. Past `per_turn`,
a submission waits for a later turn, in arrival order; waiting costs one future, not a retry.
"""
from __future__ import annotations

import asyncio
from collections import deque


class TurnGate:
    def __init__(self, per_turn: int = 32) -> None:
        self.per_turn = per_turn
        self._used = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._next_turn: asyncio.Handle | None = None

    async def wait(self) -> None:
        """Return at once while this turn has room; else when a later turn lets this caller in."""
        if self._used < self.per_turn and not self._waiting:
            self._used += 1
            self._schedule()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self._schedule()
        await waiter  # a cancelled waiter is skipped when its turn comes

    def _schedule(self) -> None:
        if self._next_turn is None:
            self._next_turn = asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        """Runs in the next turn: the count starts again, and the next callers in line are let in
        (they run in the turn after, with whatever else became ready meanwhile)."""
        self._next_turn = None
        self._used = 0
        while self._waiting and self._used < self.per_turn:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._used += 1
        if self._waiting or self._used:
            self._schedule()
