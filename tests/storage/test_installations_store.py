"""Workspace installations, OAuth states and token-refresh locks (storage/installations.py and
storage/pg/installations.py) on both backends: what one process writes another finds, a state is
consumed once, and a refresh lock has one holder at a time until released or lapsed."""
from __future__ import annotations

import asyncio
import time

from storage.contract import Store
from storage.installations import InstallationRow, installations_of


def row(team: str, secret: str = "cipher", *, enterprise: str = "", expires_at: float | None = None) -> InstallationRow:
    now = time.time()
    return InstallationRow("slack", enterprise, team, False, secret, expires_at, now, now)


async def test_installations_are_saved_found_replaced_and_deleted(store: Store) -> None:
    rows = installations_of(store)
    assert await rows.find("slack", "", "T1") is None
    await rows.save(row("T1", "first"))
    await rows.save(row("T2", "other"))
    await rows.save(row("T1", "second", expires_at=123.0))  # a reinstall or a refresh: replaced, not added
    found = await rows.find("slack", "", "T1")
    assert found is not None and found.secret == "second" and found.expires_at == 123.0
    assert [r.team_id for r in await rows.all("slack")] == ["T1", "T2"]
    assert await rows.delete("slack", "", "T1") is True
    assert await rows.delete("slack", "", "T1") is False
    assert await rows.find("slack", "", "T1") is None
    assert (await rows.find("slack", "", "T2")) is not None


async def test_a_state_is_consumed_once_and_never_after_it_expired(store: Store) -> None:
    rows = installations_of(store)
    await rows.issue_state("good", time.time() + 600)
    await rows.issue_state("stale", time.time() - 1)
    assert await rows.consume_state("forged") is False
    assert await rows.consume_state("stale") is False
    results = await asyncio.gather(*(rows.consume_state("good") for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]


async def test_a_refresh_lock_has_one_holder_until_released_or_lapsed(store: Store) -> None:
    rows = installations_of(store)
    got = await asyncio.gather(*(rows.try_lock("slack:T1", f"p{i}", 30) for i in range(6)))
    assert got.count(True) == 1
    holder = f"p{got.index(True)}"
    assert await rows.try_lock("slack:T2", "p9", 30) is True  # another workspace's lock is another lock
    await rows.unlock("slack:T1", "someone-else")  # not theirs to release
    assert await rows.try_lock("slack:T1", "p7", 30) is False
    await rows.unlock("slack:T1", holder)
    assert await rows.try_lock("slack:T1", "p7", 0.05) is True
    await asyncio.sleep(0.1)  # the holder died: its lock lapses (the lock's own timing, not the test's luck)
    assert await rows.try_lock("slack:T1", "p8", 30) is True
