"""Store benchmark: SQLite and PostgreSQL side by side.

- Submit latency: 500 concurrent submissions through the whole core (the runner running,
  the sleep provider taking 3 s), on each backend; all 500 must complete.
- Claim throughput: 2,000 queued jobs of 100 users, claimed by 1, 2 and 4 claimer processes at
  once on one database, one job per `claim_queued` call (the fair order and the global caps are
  computed in each claiming transaction), and on PostgreSQL also 10 per call (a runner with 10
  free slots); every job must be claimed exactly once. Store-level, no provider: it measures
  what the database does per claim.

PostgreSQL: `VIDEOBOT_BENCH_PG_URL` (an empty database you can spare), else a throwaway cluster
started like the tests' (Debian's initdb/pg_ctl; fsync off, so absolute figures flatter it).
Run: `.venv/bin/python -m bench.store` (`--submit-only`: the first table alone). Prints tables; not a test.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import tempfile
import time

from pathlib import Path
from typing import Any

from bench.core import make_app, pct, submit_all
from storage.models import GenerateParams, Job, JobKind, JobStatus, Origin
from storage.open import open_store

CLAIM_JOBS = 2000
CLAIM_USERS = 100


async def bench_submit(root: Path, url: str, n: int = 500) -> dict[str, float | int]:
    app = await make_app(root, duration=3.0, concurrent=n, database_url=url)
    try:
        t0 = time.perf_counter()
        jobs, latencies = await submit_all(app, n, users=50)
        wall = time.perf_counter() - t0
        finished = await asyncio.wait_for(asyncio.gather(*(app.runner.wait(j.id) for j in jobs)), 300)
        completed = sum(1 for j in finished if j.status is JobStatus.COMPLETED)
        if completed != n:
            problems = [(j.id, j.status.value, j.error_message) for j in finished if j.status is not JobStatus.COMPLETED][:3]
            raise SystemExit(f"{url.split(':', 1)[0]}: {completed} of {n} submissions completed; first problems: {problems}")
        return {
            "submit p50 ms": pct(latencies, 0.5) * 1000,
            "submit p99 ms": pct(latencies, 0.99) * 1000,
            "submit wall s": wall,
            "completed": completed,
        }
    finally:
        await app.close()


def _job(i: int, t: float) -> Job:
    return Job(
        id=f"bench{i:05d}", kind=JobKind.GENERATE, prompt="claim me", pipeline="sleep", status=JobStatus.QUEUED,
        origin=Origin(platform="slack", workspace_id="T", user_id=f"user{i % CLAIM_USERS}"),
        params=GenerateParams(seconds=1, size="128x72", seed=i), created_at=t + i * 0.001,
    )  # fmt: skip


async def _fill(url: str, data: Path) -> None:
    store = await open_store(url, data_dir=data)
    try:
        t = time.time() - 3600
        for start in range(0, CLAIM_JOBS, 100):
            await asyncio.gather(*(store.create(_job(i, t)) for i in range(start, start + 100)))
    finally:
        await store.close()


def _claimer(url: str, data: str, owner: str, per_claim: int, go: Any, out: Any) -> None:
    async def run() -> None:
        store = await open_store(url, data_dir=Path(data))
        claimed: list[str] = []
        latencies: list[float] = []
        try:
            go.wait()
            began = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                jobs = await store.claim_queued(
                    owner, 600, platforms=None, max_running=10**6, max_running_per_user=10**6, limit=per_claim
                )
                if not jobs:
                    break
                latencies.append(time.perf_counter() - t0)
                claimed.extend(j.id for j in jobs)
            out.put((owner, claimed, latencies, began, time.perf_counter()))
        finally:
            await store.close()

    asyncio.run(run())


async def bench_claims(url: str, data: Path, claimers: int, per_claim: int = 1) -> dict[str, float | int]:
    await _fill(url, data)
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, str(data), f"w{k}", per_claim, go, out)) for k in range(claimers)]
    for proc in procs:
        proc.start()
    await asyncio.sleep(3.0)  # interpreters started and stores opened (their start-up is not measured)
    go.set()
    results = [await asyncio.to_thread(out.get, True, 600) for _ in procs]
    for proc in procs:
        proc.join(30)
    ids = [job_id for r in results for job_id in r[1]]
    assert len(ids) == len(set(ids)) == CLAIM_JOBS, f"{len(ids)} claims, {len(set(ids))} distinct, of {CLAIM_JOBS}"
    latencies = [lat for r in results for lat in r[2]]
    wall = max(r[4] for r in results) - min(r[3] for r in results)
    return {
        "jobs/s": CLAIM_JOBS / wall,
        "claim p50 ms": pct(latencies, 0.5) * 1000,
        "claim p99 ms": pct(latencies, 0.99) * 1000,
        "busiest share %": 100.0 * max(len(r[1]) for r in results) / CLAIM_JOBS,
    }


async def _pg_urls() -> tuple[Any, Any]:
    """A function giving a fresh PostgreSQL URL per call, and a cleanup."""
    given = os.environ.get("VIDEOBOT_BENCH_PG_URL")
    if given:
        import asyncpg

        async def reset() -> str:
            conn = await asyncpg.connect(given)
            try:  # an empty database each time: drop what the previous run made
                await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            finally:
                await conn.close()
            return given

        return reset, None
    from tests.pg import PgCluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL: set VIDEOBOT_BENCH_PG_URL or install postgresql")
    cluster = PgCluster(bindir)
    cluster.start()
    return cluster.fresh_database, cluster.stop


async def main(argv: list[str]) -> None:
    fresh, stop = await _pg_urls()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            submit = {
                "sqlite": await bench_submit(root / "s-sqlite", f"sqlite:///{root / 'submit.sqlite3'}"),
                "postgresql": await bench_submit(root / "s-pg", await fresh()),
            }
            print("\n500 concurrent submissions through the core (runner running, provider takes 3 s)")
            print(f"{'backend':<12} {'p50 ms':>9} {'p99 ms':>9} {'wall s':>8} {'completed':>10}")
            for name, row in submit.items():
                print(f"{name:<12} {row['submit p50 ms']:>9.1f} {row['submit p99 ms']:>9.1f} {row['submit wall s']:>8.2f} {row['completed']:>10}")
            if "--submit-only" in argv:
                return
            print(f"\nclaim throughput: {CLAIM_JOBS} queued jobs of {CLAIM_USERS} users, claimer processes on one database")
            print(f"{'backend':<12} {'jobs/claim':>10} {'claimers':>8} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'busiest %':>10}")
            for name, per_claim in (("postgresql", 1), ("postgresql", 10), ("sqlite", 1)):
                for claimers in (1, 2, 4):
                    data = root / f"c-{name}-{per_claim}-{claimers}"
                    data.mkdir()
                    url = await fresh() if name == "postgresql" else f"sqlite:///{data / 'claims.sqlite3'}"
                    row = await bench_claims(url, data, claimers, per_claim)
                    print(f"{name:<12} {per_claim:>10} {claimers:>8} {row['jobs/s']:>8.0f} {row['claim p50 ms']:>8.2f} "
                          f"{row['claim p99 ms']:>8.2f} {row['busiest share %']:>10.0f}", flush=True)  # fmt: skip
    finally:
        if stop is not None:
            stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
