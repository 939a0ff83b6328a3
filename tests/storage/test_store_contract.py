"""The store contract (storage/contract.py), method by method, on every backend.

The `store` fixture (tests/stores.py) opens a fresh SQLite file or a fresh PostgreSQL database
on the throwaway cluster (tests/pg.py); each test runs once per backend.
"""
from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import pytest

from storage.contract import Store
from storage.jobs import AlreadyFinished, JobStore, LeaseLost
from storage.pg import PgJobStore
from storage.models import GenerateParams, JobKind, JobStatus
from storage.spend import OverBudget, QueueFull, QueueLimit, SpendLimit
from tests.stores import make_job


async def test_both_backends_satisfy_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


@pytest.mark.parametrize("implementation", [JobStore, PgJobStore])
def test_every_contract_method_has_the_contracts_signature(implementation: type) -> None:
    """Same names, kinds and defaults of parameters: a caller written against the Protocol works on both."""
    for name, member in vars(Store).items():
        if name.startswith("_") or not inspect.iscoroutinefunction(member):
            continue
        ours = inspect.signature(getattr(implementation, name))
        theirs = inspect.signature(member)
        shape = [(p.name, p.kind, p.default) for p in theirs.parameters.values()]
        assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == shape, f"{implementation.__name__}.{name}"


async def test_a_job_round_trips_unchanged(store: Store) -> None:
    job = make_job(
        "rt1", user="u1", workspace="T1", prompt="a fox 100% _real_", cost_estimate=0.25,
        state={"image_step_cost": 0.04, "nested": {"a": [1, 2]}}, extra={"thread": "1.2"}, user_name="Ann",
    )  # fmt: skip
    job = job.model_copy(update={"params": GenerateParams(seconds=4, size="640x360", seed=7, options={"quality": "high"})})
    stored = await store.create(job)
    got = await store.get("rt1")
    assert got == stored == job
    assert await store.get("missing") is None


async def test_update_writes_fields_and_status_changes_add_events(store: Store) -> None:
    await store.create(make_job("u1"))
    job = await store.update(
        "u1", status=JobStatus.RUNNING, provider="p", remote_id="r1", progress=10, state={"a": 1},
        params=GenerateParams(seconds=8, size="1x1", seed=1), origin_extra={"k": "v"}, status_message_id="m1",
    )  # fmt: skip
    assert job.status is JobStatus.RUNNING and job.remote_id == "r1" and job.state == {"a": 1}
    assert job.params.seconds == 8 and job.origin.extra == {"k": "v"} and job.origin.status_message_id == "m1"
    assert job.updated_at is not None
    await store.update("u1", progress=20)  # no status, no detail: no event
    await store.update("u1", detail="a note")
    events = await store.events("u1")
    assert [(e["status"], e["detail"]) for e in events] == [("queued", None), ("running", None), ("running", "a note")]
    assert set(events[0]) >= {"at", "status", "progress", "detail", "runner"}
    with pytest.raises(KeyError):
        await store.update("u1", bogus=1)
    with pytest.raises(KeyError):
        await store.update("nope", status=JobStatus.RUNNING)


async def test_fenced_writes_refuse_a_lost_lease_and_a_finished_job(store: Store) -> None:
    await store.create(make_job("f1"), lease_owner="me", lease_seconds=60)
    await store.update("f1", fence="me", status=JobStatus.RUNNING)
    with pytest.raises(LeaseLost):
        await store.update("f1", fence="other", progress=50)
    with pytest.raises(LeaseLost):
        await store.set_progress("f1", 50, fence="other")
    await store.set_progress("f1", 40, fence="me")
    assert (await store.get("f1")).progress == 40  # type: ignore[union-attr]
    await store.update("f1", fence="me", status=JobStatus.COMPLETED, finished_at=time.time())
    with pytest.raises(AlreadyFinished):
        await store.update("f1", fence="me", progress=1)
    with pytest.raises(AlreadyFinished):
        await store.update("f1", status=JobStatus.FAILED)  # unfenced status writes never leave a terminal state
    with pytest.raises(AlreadyFinished):
        await store.set_progress("f1", 3, fence="me")
    assert (await store.get("f1")).status is JobStatus.COMPLETED  # type: ignore[union-attr]
    await store.update("f1", detail="later note")  # an unfenced note without status still lands
    assert [e["status"] for e in await store.events("f1")][-1] == "completed"


async def test_events_name_the_runner_that_wrote_them(store: Store) -> None:
    await store.create(make_job("e1"), lease_owner="hostA~b/1/2.00/aa", lease_seconds=60)
    await store.update("e1", fence="hostA~b/1/2.00/aa", status=JobStatus.RUNNING)
    await store.update("e1", status=JobStatus.DOWNLOADING, by="hostB~b/9/3.00/bb")
    await store.add_event("e1", "operator note")
    await store.add_event("e1", "runner note", by="hostB~b/9/3.00/bb")
    runners = [e["runner"] for e in await store.events("e1")]
    assert runners == ["hostA~b/1/2.00/aa", "hostA~b/1/2.00/aa", "hostB~b/9/3.00/bb", None, "hostB~b/9/3.00/bb"]


async def test_reopen_delivery_only_from_completed_undelivered(store: Store) -> None:
    await store.create(make_job("d1"))
    with pytest.raises(AlreadyFinished):
        await store.reopen_delivery("d1", "again")
    await store.update("d1", status=JobStatus.COMPLETED, error_code="undelivered", output_path="/x.mp4", finished_at=1.0)
    job = await store.reopen_delivery("d1", "redeliver", by="op")
    assert job.status is JobStatus.DELIVERING and job.error_code is None and job.finished_at is None
    assert (await store.events("d1"))[-1]["runner"] == "op"


async def test_leases_claim_renew_release(store: Store) -> None:
    await store.create(make_job("l1"))
    await store.create(make_job("l2"))
    assert await store.claim("l1", "a", 60)
    assert await store.claim("l1", "a", 60)  # ours already
    assert not await store.claim("l1", "b", 60)  # alive elsewhere (a foreign host's lease is alive until it runs out)
    assert await store.claim("l2", "a", 0.01)
    await _until(lambda: _expired(store, "l2"))
    assert await store.claim("l2", "b", 60)  # expired: taken over
    assert await store.renew("a", ["l1", "l2", "ghost"], 60) == {"l1"}
    assert await store.renew("a", [], 60) == set()
    await store.release("a", ["l1"])
    assert (await store.get("l1")).lease_owner is None  # type: ignore[union-attr]
    await store.release("b")
    assert (await store.get("l2")).lease_owner is None  # type: ignore[union-attr]
    await store.update("l1", status=JobStatus.CANCELLED)
    assert not await store.claim("l1", "a", 60)  # finished jobs are never claimed
    assert not await store.claim("ghost", "a", 60)


async def _expired(store: Store, job_id: str) -> bool:
    job = await store.get(job_id)
    return job is not None and job.lease_until is not None and job.lease_until < time.time()


async def test_reads(store: Store) -> None:
    now = time.time()
    await store.create(make_job("ab_1", user="u1", created_at=now - 30, platform="slack", workspace="T1"))
    await store.create(make_job("ab%2", user="u1", created_at=now - 20, platform="slack", workspace="T2"))
    await store.create(make_job("abc3", user="u2", created_at=now - 10, platform="discord", parent="ab_1"))
    await store.update("ab_1", status=JobStatus.COMPLETED, finished_at=now - 5, status_message_id="S1", remote_id="r1")
    await store.update("ab%2", status=JobStatus.RUNNING, result_message_id="R2", state={"failed_remote_ids": ["r0"]})
    assert [j.id for j in await store.find_prefix("ab_", 5)] == ["ab_1"]
    assert [j.id for j in await store.find_prefix("ab%", 5)] == ["ab%2"]
    assert {j.id for j in await store.find_prefix("ab", 5)} == {"ab_1", "ab%2", "abc3"}
    assert [j.id for j in await store.find_prefix("ab", 5, platform="slack", workspace_id="T2", scoped=True)] == ["ab%2"]
    assert [j.id for j in await store.find_prefix("abc", 5, platform="discord", workspace_id=None, scoped=True)] == ["abc3"]
    assert [j.id for j in await store.list()] == ["abc3", "ab%2", "ab_1"]
    assert [j.id for j in await store.list(platform="slack", user_id="u1", limit=1)] == ["ab%2"]
    assert [j.id for j in await store.list(statuses=[JobStatus.COMPLETED])] == ["ab_1"]
    await store.update("abc3", deleted_at=now)
    assert [j.id for j in await store.list()] == ["ab%2", "ab_1"]
    assert len(await store.list(include_deleted=True)) == 3
    assert [j.id for j in await store.unfinished()] == ["ab%2", "abc3"]
    assert [j.id for j in await store.unfinished(["discord"])] == ["abc3"]
    assert (await store.find_by_message("slack", "S1")).id == "ab_1"  # type: ignore[union-attr]
    assert (await store.find_by_message("slack", "R2")).id == "ab%2"  # type: ignore[union-attr]
    assert await store.find_by_message("discord", "S1") is None
    assert [j.id for j in await store.with_status(["ab_1", "ab%2", "zz"], JobStatus.RUNNING)] == ["ab%2"]
    assert await store.with_status([], JobStatus.RUNNING) == []
    assert [j.id for j in await store.media_to_expire(now)] == ["ab_1"]
    await store.update("ab_1", media_expired_at=now)
    assert await store.media_to_expire(now) == []
    assert sorted(await store.remote_ids_since(now - 60, excluding="abc3")) == ["r0", "r1"]
    assert await store.remote_ids_since(now - 60, excluding="ab_1") == ["r0"]
    assert [j.id for j in await store.children("ab_1")] == ["abc3"]
    assert await store.count(statuses=[JobStatus.QUEUED, JobStatus.RUNNING]) == 2
    assert await store.count(statuses=[JobStatus.RUNNING], platform="slack", user_id="u1") == 1


async def test_settings_and_pending_spends(store: Store) -> None:
    await store.put_setting("slack", "T1", "tenant", "", "user_budget_usd", 2.5, by="admin")
    await store.put_setting("slack", "T1", "channel", "C1", "pipeline", "local", by="admin")
    await store.put_setting("slack", "T1", "tenant", "", "user_budget_usd", {"v": [1]}, by="admin")
    await store.put_setting("slack", None, "user", "U1", "x", True, by="u")
    assert sorted(await store.settings_rows("slack", "T1")) == [
        ("channel", "C1", "pipeline", "local"), ("tenant", "", "user_budget_usd", {"v": [1]}),
    ]  # fmt: skip
    assert await store.settings_rows("slack", None) == [("user", "U1", "x", True)]
    await store.put_setting("slack", "T1", "channel", "C1", "pipeline", None, by="admin")
    assert await store.settings_rows("slack", "T1") == [("tenant", "", "user_budget_usd", {"v": [1]})]

    job = make_job("p1", platform="slack", user="U1", cost_estimate=3.0)
    assert await store.peek_pending("tok") is None
    await store.put_pending("tok", job, expires_at=time.time() + 60)
    peeked = await store.peek_pending("tok")
    assert peeked is not None and peeked.job == job and (peeked.platform, peeked.user_id, peeked.state) == ("slack", "U1", "pending")
    assert peeked.estimate == 3.0 and peeked.expires_at > time.time()
    await store.put_pending("old", job, expires_at=time.time() - 1)
    assert await store.take_pending("nope", to="confirmed", platform="slack", user_id="U1") == (None, "missing")
    assert (await store.take_pending("tok", to="confirmed", platform="slack", user_id="U2"))[1] == "not_owner"
    taken, state = await store.take_pending("tok", to="confirmed", platform="slack", user_id="U1")
    assert state == "pending" and taken == job
    assert (await store.take_pending("tok", to="cancelled", platform="slack", user_id="U1"))[1] == "confirmed"
    assert (await store.take_pending("old", to="confirmed", platform="slack", user_id="U1"))[1] == "expired"
    assert (await store.take_pending("old", to="confirmed", platform="slack", user_id="U1"))[1] == "expired"


async def test_spend_rules_and_reports(store: Store) -> None:
    now = time.time()
    day = now - 3600
    rows: list[tuple[str, dict[str, Any]]] = [
        ("running", dict(status=JobStatus.RUNNING, cost_estimate=1.0)),
        ("done", dict(status=JobStatus.COMPLETED, cost_estimate=1.0, cost_actual=0.5, finished_at=now)),
        ("done_noactual", dict(status=JobStatus.COMPLETED, cost_estimate=0.75, finished_at=now)),
        ("failed_image", dict(status=JobStatus.FAILED, cost_estimate=2.0, state={"image_step_cost": 0.125})),
        ("failed_billed", dict(status=JobStatus.FAILED, cost_estimate=2.0, cost_actual=0.3, state={"image_step_cost": 0.125})),
        ("cancelled_free", dict(status=JobStatus.CANCELLED, cost_estimate=2.0)),
        ("scene", dict(status=JobStatus.COMPLETED, cost_actual=9.0, state={"story_scene": 1}, finished_at=now)),
    ]
    for job_id, fields in rows:
        await store.create(make_job(job_id, platform="slack", user="u1", workspace="T1", created_at=now - 60,
                                    cost_estimate=fields.pop("cost_estimate", None)))  # fmt: skip
        await store.update(job_id, **fields)
    await store.create(make_job("other", platform="slack", user="u2", workspace="T1", created_at=now - 60, cost_estimate=0.1))
    await store.create(make_job("old", platform="slack", user="u1", workspace="T1", created_at=day - 10, cost_estimate=5.0))
    await store.create(make_job("img", platform="slack", user="u2", workspace="T1", created_at=now - 60, cost_estimate=0.2,
                                kind=JobKind.IMAGE))  # fmt: skip
    await store.update("img", state={"gpu_seconds": 2.5})
    expected_u1 = 1.0 + 0.5 + 0.75 + 0.125 + 0.3
    assert await store.spend_since(platform="slack", since=day, user_id="u1") == pytest.approx(expected_u1)
    assert await store.spend_since(platform="slack", since=day, workspace_id="T1") == pytest.approx(expected_u1 + 0.3)
    assert await store.spend_since(platform="discord", since=0) == 0
    spenders = await store.top_spenders(since=day)
    assert [(s.user_id, s.jobs) for s in spenders] == [("u1", 7), ("u2", 2)]
    assert spenders[0].spent == pytest.approx(expected_u1) and spenders[0].workspace_id == "T1"
    assert [s.user_id for s in await store.top_spenders(since=day, user_id="u2")] == ["u2"]
    outcomes = await store.job_outcomes(since=day, exclude_kinds=[JobKind.IMAGE])
    assert len(outcomes) == 8 and all(o.pipeline == "local" for o in outcomes)
    assert {o.status for o in outcomes} >= {JobStatus.FAILED, JobStatus.COMPLETED}
    with_images = await store.job_outcomes(since=day)
    assert sum(o.gpu_seconds for o in with_images) == pytest.approx(2.5)


async def test_usage_rows_remote_refs_and_lease_holders(store: Store) -> None:
    now = time.time()
    await store.create(make_job("w1", platform="slack", workspace="T1", user="u1", user_name="Ann", created_at=now - 9,
                                cost_estimate=0.5, state={"ab": {"split": "exp", "arm": "sora"}}))  # fmt: skip
    await store.create(make_job("w2", platform="slack", workspace=None, user="u2", created_at=now - 8, cost_estimate=0.25))
    await store.create(make_job("w3", platform="slack", workspace="T1", user="u1", created_at=now - 7, state={"story_scene": 1}))
    mine = await store.job_outcomes(since=0, platform="slack", workspace_id="T1", scoped=True, include_scenes=False)
    assert [(o.user_id, o.user_name, o.ab_split, o.ab_arm, o.cost) for o in mine] == [("u1", "Ann", "exp", "sora", 0.5)]
    assert [o.user_id for o in await store.job_outcomes(since=0, platform="slack", workspace_id=None, scoped=True)] == ["u2"]
    assert len(await store.job_outcomes(since=0)) == 3

    await store.update("w1", remote_id="r1", provider="openai")
    await store.update("w2", remote_id="r2", provider="runway", status=JobStatus.RUNNING)
    refs = await store.remote_jobs()
    assert [(r.remote_id, r.job_id, r.status) for r in refs] == [("r2", "w2", JobStatus.RUNNING), ("r1", "w1", JobStatus.QUEUED)]
    assert [r.job_id for r in await store.remote_jobs(platform="slack", workspace_id="T1", scoped=True)] == ["w1"]
    assert [r.job_id for r in await store.remote_jobs(provider="runway")] == ["w2"]
    assert [r.job_id for r in await store.remote_jobs(remote_id="r1", limit=1)] == ["w1"]
    assert await store.remote_jobs(platform="slack", workspace_id=None, scoped=True, remote_id="r1") == []

    assert await store.lease_holders() == []
    await store.claim("w1", "runner-a", 60)
    await store.claim("w2", "runner-a", 60)
    await store.claim("w3", "runner-b", 60)
    await store.update("w3", status=JobStatus.COMPLETED)
    holders = await store.lease_holders()
    assert [(h.owner, h.jobs) for h in holders] == [("runner-a", 2)] and holders[0].until is not None


async def test_the_spend_gate_refuses_and_writes_nothing(store: Store) -> None:
    limit = [SpendLimit("slack", 1.0, 0.0, "your", user_id="u1")]
    await store.create(make_job("g1", platform="slack", user="u1", cost_estimate=0.6), spend_limits=limit)
    with pytest.raises(OverBudget) as refused:
        await store.create(make_job("g2", platform="slack", user="u1", cost_estimate=0.6), spend_limits=limit)
    assert refused.value.spent == pytest.approx(0.6)
    assert await store.get("g2") is None
    # Re-pricing a running job counts the others plus its new estimate.
    await store.update("g1", cost_estimate=0.9, spend_limits=limit)
    with pytest.raises(OverBudget):
        await store.update("g1", cost_estimate=1.1, spend_limits=limit)
    assert (await store.get("g1")).cost_estimate == pytest.approx(0.9)  # type: ignore[union-attr]
    # Every limit at once (queue, user, workspace): each is checked, whichever refuses says so.
    both = [SpendLimit("slack", 5.0, 0.0, "your", user_id="u2"), SpendLimit("slack", 1.5, 0.0, "this workspace's", workspace_id="T")]
    queue = QueueLimit("slack", "u2", 5)
    await store.create(make_job("g3", platform="slack", user="u2", workspace="T", cost_estimate=1.0), spend_limits=both, queue_limit=queue)
    with pytest.raises(OverBudget) as refused:
        await store.create(make_job("g4", platform="slack", user="u2", workspace="T", cost_estimate=1.0), spend_limits=both, queue_limit=queue)
    assert refused.value.limit.whose == "this workspace's" and refused.value.spent == pytest.approx(1.0)
    await store.update("g3", cost_estimate=1.4, spend_limits=both)
    with pytest.raises(OverBudget):
        await store.update("g3", cost_estimate=1.6, spend_limits=both)


async def test_the_queue_limit_refuses_and_writes_nothing(store: Store) -> None:
    limit = QueueLimit("slack", "u1", 2)
    await store.create(make_job("q1", platform="slack", user="u1"), queue_limit=limit)
    await store.create(make_job("q2", platform="slack", user="u1"), queue_limit=limit)
    with pytest.raises(QueueFull) as refused:
        await store.create(make_job("q3", platform="slack", user="u1"), queue_limit=limit)
    assert refused.value.pending == 2 and await store.get("q3") is None
    await store.create(make_job("o1", platform="slack", user="u2"), queue_limit=QueueLimit("slack", "u2", 2))
    await store.update("q1", status=JobStatus.COMPLETED)
    await store.create(make_job("q3", platform="slack", user="u1"), queue_limit=limit)


async def test_claim_queued_is_fair_across_users_and_keeps_the_caps(store: Store) -> None:
    t = time.time() - 100
    # alice queued first and most; bob and carol later; dave's job is on another platform.
    for i, (job_id, user, platform) in enumerate([
        ("a1", "alice", "slack"), ("a2", "alice", "slack"), ("a3", "alice", "slack"),
        ("b1", "bob", "slack"), ("b2", "bob", "slack"), ("c1", "carol", "slack"), ("d1", "dave", "discord"),
    ]):  # fmt: skip
        await store.create(make_job(job_id, user=user, platform=platform, created_at=t + i))
    got = await store.claim_queued("w1", 60, platforms=["slack"], max_running=10, max_running_per_user=2, limit=10)
    assert [j.id for j in got] == ["a1", "b1", "c1", "a2", "b2"]
    assert all(j.lease_owner == "w1" and j.lease_until and j.lease_until > time.time() for j in got)
    # Everyone is at the cap now; dave is on a platform w1 does not serve.
    assert await store.claim_queued("w1", 60, platforms=["slack"], max_running=10, max_running_per_user=2, limit=10) == []
    assert [j.id for j in await store.claim_queued("w2", 60, platforms=None, max_running=10, max_running_per_user=2, limit=10)] == ["d1"]


async def test_claim_queued_counts_every_runners_live_leases(store: Store) -> None:
    t = time.time() - 100
    for i, (job_id, user) in enumerate([("x1", "alice"), ("x2", "alice"), ("y1", "bob"), ("y2", "bob"), ("z1", "carol")]):
        await store.create(make_job(job_id, user=user, created_at=t + i))
    # alice already has a running job held by another worker; a finished one and an expired lease do not count.
    await store.create(make_job("held", user="alice", created_at=t - 10), lease_owner="other", lease_seconds=60)
    await store.update("held", status=JobStatus.RUNNING)
    await store.create(make_job("gone", user="bob", created_at=t - 9), lease_owner="dead", lease_seconds=0.01)
    await store.update("gone", status=JobStatus.RUNNING)
    await store.create(make_job("fin", user="carol", created_at=t - 8), lease_owner="other", lease_seconds=60)
    await store.update("fin", status=JobStatus.COMPLETED)
    await _until(lambda: _expired(store, "gone"))
    got = await store.claim_queued("w", 60, platforms=None, max_running=4, max_running_per_user=2, limit=10)
    # 1 taken globally -> room for 3; bob (0 taken, oldest) then carol, then alice (1 taken) and bob's second tie at level 1.
    assert [j.id for j in got] == ["y1", "z1", "x1"]
    assert await store.claim_queued("w", 60, platforms=None, max_running=4, max_running_per_user=2, limit=10) == []
    got = await store.claim_queued("w", 60, platforms=None, max_running=6, max_running_per_user=2, limit=1)
    assert [j.id for j in got] == ["y2"]


async def test_a_queued_job_with_a_live_lease_is_not_claimed_but_an_expired_one_is(store: Store) -> None:
    await store.create(make_job("q1", user="u"), lease_owner="submitter", lease_seconds=60)
    await store.create(make_job("q2", user="v"), lease_owner="submitter", lease_seconds=0.01)
    await _until(lambda: _expired(store, "q2"))
    got = await store.claim_queued("w", 60, platforms=None, max_running=10, max_running_per_user=5, limit=10)
    assert [j.id for j in got] == ["q2"]


async def test_queue_order_is_the_claims_fair_order_over_every_waiting_job(store: Store) -> None:
    t = time.time() - 100
    for i, (job_id, user, platform) in enumerate([
        ("a1", "alice", "slack"), ("a2", "alice", "slack"), ("a3", "alice", "slack"),
        ("b1", "bob", "slack"), ("b2", "bob", "slack"), ("c1", "carol", "slack"), ("d1", "dave", "discord"),
    ]):  # fmt: skip
        await store.create(make_job(job_id, user=user, platform=platform, created_at=t + i))
    # Round-robin across users, oldest first, no caps (a user's third job still has a place).
    assert await store.queue_order() == ["a1", "b1", "c1", "d1", "a2", "b2", "a3"]
    assert await store.queue_order(["slack"]) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert await store.queue_order([]) == []
    # What a user has running (a live lease, any runner) puts their waiting jobs further back;
    # a job already claimed waits in its worker, not in the store.
    await store.create(make_job("held", user="bob", platform="slack", created_at=t - 10), lease_owner="w", lease_seconds=60)
    await store.update("held", status=JobStatus.RUNNING)
    claimed = await store.claim_queued("w", 60, platforms=["slack"], max_running=10, max_running_per_user=5, limit=1)
    assert [j.id for j in claimed] == ["a1"]
    assert await store.queue_order(["slack"]) == ["c1", "a2", "b1", "a3", "b2"]
    # The order is exactly what the claims then take.
    got = await store.claim_queued("w", 60, platforms=["slack"], max_running=10, max_running_per_user=5, limit=10)
    assert [j.id for j in got] == ["c1", "a2", "b1", "a3", "b2"]
    assert await store.queue_order(["slack"]) == []


async def test_signals(store: Store) -> None:
    start = await store.last_signal_id()
    assert await store.signals_after(start) == []
    await store.publish("j1", "progress", {"progress": 10})
    await store.publish("j2", "state", {})
    signals = await store.signals_after(start)
    assert [(s.job_id, s.kind, s.payload) for s in signals] == [("j1", "progress", {"progress": 10}), ("j2", "state", {})]
    assert signals[0].id < signals[1].id == await store.last_signal_id()
    assert [s.job_id for s in await store.signals_after(signals[0].id)] == ["j2"]
    assert len(await store.signals_after(start, limit=1)) == 1
    began = time.monotonic()
    await store.wait_for_signal(0.05)
    assert time.monotonic() - began < 5
    assert await store.prune_signals(time.time() + 1) == 2
    assert await store.signals_after(start) == []
    await store.publish("j3", "state", {})
    assert (await store.signals_after(signals[1].id))[0].id > signals[1].id  # ids never go back


async def test_workers_and_queue_stats(store: Store) -> None:
    assert await store.workers() == []
    await store.heartbeat("w1", host="h1", pid=10, role="worker", started_at=100.0, held=0)
    await store.heartbeat("w2", host="h2", pid=20, role="gateway", started_at=200.0, held=0)
    await store.heartbeat("w1", host="h1", pid=10, role="worker", started_at=100.0, held=3)
    rows = await store.workers()
    assert [(w.id, w.host, w.pid, w.role, w.held) for w in rows] == [("w1", "h1", 10, "worker", 3), ("w2", "h2", 20, "gateway", 0)]
    assert rows[0].last_seen >= rows[0].started_at
    await store.drop_worker("w1")
    assert [w.id for w in await store.workers()] == ["w2"]

    assert (await store.queue_stats()).model_dump() == {"queued": 0, "oldest_queued_at": None, "running": 0}
    t = time.time() - 50
    await store.create(make_job("s1", created_at=t, platform="slack"))
    await store.create(make_job("s2", created_at=t + 1, platform="discord"))
    await store.create(make_job("s3", created_at=t + 2, platform="slack"))
    await store.update("s3", status=JobStatus.RUNNING)
    await store.create(make_job("s4", created_at=t + 3))
    await store.update("s4", status=JobStatus.FAILED)
    stats = await store.queue_stats()
    assert (stats.queued, stats.running) == (2, 1) and stats.oldest_queued_at == pytest.approx(t)
    stats = await store.queue_stats(["discord"])
    assert (stats.queued, stats.running) == (1, 0) and stats.oldest_queued_at == pytest.approx(t + 1)


async def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_unfinished_by_status_counts_reserves_and_dates(store: Store) -> None:
    """What /metrics reports (jobs in each state, the oldest queued, the money reserved): a story's
    scenes reserve nothing of their own (the story row did), finished jobs hold nothing any more."""
    assert await store.unfinished_by_status() == []
    t = time.time() - 100
    await store.create(make_job("r1", cost_estimate=0.4, created_at=t))
    await store.create(make_job("r2", cost_estimate=1.25, created_at=t + 1))
    await store.update("r2", status=JobStatus.RUNNING)
    await store.create(make_job("r3", cost_estimate=2.0, created_at=t + 2))
    await store.update("r3", status=JobStatus.COMPLETED, cost_actual=1.5)
    await store.create(make_job("r4", cost_estimate=3.0, state={"story_scene": 1}, created_at=t + 3))
    await store.create(make_job("r5", created_at=t + 4))
    totals = {r.status: r for r in await store.unfinished_by_status()}
    assert set(totals) == {JobStatus.QUEUED, JobStatus.RUNNING}
    assert totals[JobStatus.QUEUED].jobs == 3 and totals[JobStatus.QUEUED].reserved_usd == pytest.approx(0.4)
    assert totals[JobStatus.QUEUED].oldest_created_at == pytest.approx(t)
    assert totals[JobStatus.RUNNING].jobs == 1 and totals[JobStatus.RUNNING].reserved_usd == pytest.approx(1.25)
