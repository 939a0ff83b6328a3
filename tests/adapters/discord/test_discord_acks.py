"""AcksFirst: the cyclic collector waits while acks are pending, and always comes back."""
from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator

import pytest

from bot.adapters.discord_bot.flows import AcksFirst


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


async def until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def past_due(acks: AcksFirst) -> None:
    """Return once every resume the AcksFirst could have scheduled until now has had its turn.

    Its timers run on the loop's clock; a callback due later than all of them (twice the grace)
    runs after them, however slow the machine: an order of events, not a race with the clock.
    The max pause is set far beyond it in these tests, so only the grace timer is in question."""
    assert acks.GC_MAX_PAUSE > 10 * acks.GC_GRACE
    later = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(2 * acks.GC_GRACE, later.set_result, None)
    await later


def timed(grace: float) -> AcksFirst:
    acks = AcksFirst()
    acks.GC_GRACE = grace
    acks.GC_MAX_PAUSE = 3600.0
    return acks


async def test_collector_paused_while_acks_pending_and_resumed_after_grace() -> None:
    acks = timed(0.02)
    acks.enter()
    acks.enter()
    assert not gc.isenabled()
    acks.leave()
    await past_due(acks)
    assert not gc.isenabled(), "one ack still pending: the collector still waits"
    acks.leave()
    await until(gc.isenabled)
    acks.close()


async def test_next_batch_within_grace_keeps_the_pause() -> None:
    acks = timed(0.05)
    acks.enter()
    acks.leave()
    acks.enter()  # the next batch of commands, close behind
    await past_due(acks)
    assert not gc.isenabled(), "an ack is pending again: the grace timer no longer applies"
    acks.leave()
    await until(gc.isenabled)
    acks.close()


async def test_pause_is_capped_under_a_steady_stream() -> None:
    acks = AcksFirst()
    acks.GC_MAX_PAUSE = 0.1
    acks.enter()  # never leaves: a stream of commands that keeps one ack pending
    await until(gc.isenabled)
    acks.close()


async def test_a_collector_owned_elsewhere_is_left_alone() -> None:
    gc.disable()
    acks = timed(0.01)
    acks.enter()
    acks.leave()
    await past_due(acks)
    assert not gc.isenabled()
    acks.close()
    assert not gc.isenabled()


async def test_close_gives_the_collector_back() -> None:
    acks = AcksFirst()
    acks.enter()
    assert not gc.isenabled()
    acks.close()
    assert gc.isenabled()
