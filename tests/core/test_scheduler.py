"""FairQueue: round-robin across users under a global and a per-user cap; membership kept in step."""
from __future__ import annotations

from bot.core.scheduler import FairQueue


def test_users_take_turns_and_the_caps_hold() -> None:
    fair = FairQueue(max_running=3, max_running_per_user=2)
    for i in range(4):
        fair.push("alice", f"a{i}")
    fair.push("bob", "b0")
    assert len(fair) == 5 and fair.positions() == {"a0": 1, "b0": 2, "a1": 3, "a2": 4, "a3": 5}
    started = [fair.pop_ready(), fair.pop_ready(), fair.pop_ready()]
    assert started == [("alice", "a0"), ("bob", "b0"), ("alice", "a1")]
    assert fair.pop_ready() is None, "the global cap of 3 is reached"
    fair.finish("b0")
    assert fair.pop_ready() is None, "alice is at her own cap of 2; nobody else waits"
    fair.finish("a0")
    assert fair.pop_ready() == ("alice", "a2")
    assert len(fair) == 1 and fair.is_queued("a3") and not fair.is_queued("a2")


def test_remove_and_front_keep_membership_exact() -> None:
    fair = FairQueue(max_running=10, max_running_per_user=10)
    fair.push("alice", "a0")
    fair.push("alice", "a1")
    fair.push("alice", "back", front=True)  # a resumed job keeps its place ahead
    assert fair.remove("a0") and not fair.remove("a0") and not fair.remove("never")
    assert not fair.is_queued("a0") and fair.is_queued("a1") and len(fair) == 2
    assert fair.pop_ready() == ("alice", "back")
    assert fair.remove("a1") and len(fair) == 0 and fair.pop_ready() is None
    fair.push("bob", "b0")
    assert fair.is_queued("b0") and fair.positions() == {"b0": 1}
