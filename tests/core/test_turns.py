"""TurnGate: a burst of submissions starts at most `per_turn` per turn of the event loop, in order."""
from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from bot.app import App
from bot.core.models import GenerateRequest, Origin
from bot.core.turns import TurnGate


def turn_counter() -> tuple[list[int], Callable[[], None]]:
    """A callback that re-schedules itself every turn, counting turns; call the second item to stop."""
    turn = [0]
    handle: list[asyncio.Handle] = []

    def tick() -> None:
        turn[0] += 1
        handle[:] = [asyncio.get_running_loop().call_soon(tick)]

    handle.append(asyncio.get_running_loop().call_soon(tick))
    return turn, lambda: handle[0].cancel()


async def test_a_burst_is_let_in_per_turn_in_arrival_order() -> None:
    gate = TurnGate(per_turn=10)
    turn, stop = turn_counter()
    passed: list[tuple[int, int]] = []

    async def caller(i: int) -> None:
        await gate.wait()
        passed.append((i, turn[0]))

    await asyncio.gather(*(caller(i) for i in range(95)))
    stop()
    assert [i for i, _ in passed] == list(range(95)), "first come, first in"
    per_turn = Counter(t for _, t in passed)
    assert max(per_turn.values()) <= 10 and len(per_turn) >= 10, per_turn


async def test_a_cancelled_waiter_gives_its_place_to_the_next() -> None:
    gate = TurnGate(per_turn=1)
    a, b, c = (asyncio.ensure_future(gate.wait()) for _ in range(3))
    await asyncio.sleep(0)  # one turn: a takes its place, b and c wait in line
    assert a.done() and not b.done() and not c.done()
    b.cancel()
    await asyncio.wait_for(c, 5)
    assert b.cancelled()
    await asyncio.wait_for(gate.wait(), 5)  # and the gate keeps turning afterwards


async def test_a_burst_of_submissions_starts_at_most_per_turn_and_all_are_stored(app: App) -> None:
    turn, stop = turn_counter()
    started: list[int] = []
    original = app.service.admission.admit

    async def counted(job, **kw):  # type: ignore[no-untyped-def]
        started.append(turn[0])  # the door's checks begin in this turn
        return await original(job, **kw)

    app.service.admission.admit = counted  # type: ignore[method-assign]
    try:
        jobs = await asyncio.gather(*(
            app.service.submit(GenerateRequest(prompt=f"clip {i}", seconds=1, size="128x72"), Origin(user_id=f"u{i % 50}"))
            for i in range(200)
        ))  # fmt: skip
    finally:
        stop()
        app.service.admission.admit = original  # type: ignore[method-assign]
    assert len({j.id for j in jobs}) == 200 and len(started) == 200
    per_turn = Counter(started)
    assert max(per_turn.values()) <= 32 and len(per_turn) >= 200 // 32, per_turn
