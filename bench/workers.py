"""Worker benchmark: real `--role worker` processes (the sleep provider) on SQLite and PostgreSQL.

For 1, 2 and 4 worker processes on one database: the workers are started and ready (their
start-up is not measured), then JOBS jobs of USERS users are stored queued and unleased (as a
gateway or `--detach` stores them) with one "queued" signal, and the clock runs until every
job has completed. Each worker is the real composition of `videobot run --role worker`
(bot.cli.run.Worker: claims, runner, signal publisher, heartbeat) with the sleep pipeline
registered, so what is measured is the bot's own cost around a provider that takes exactly
PROVIDER_SECONDS:

- claimed in: from the first job being stored to the last of them leaving the queue (`started_at`),
  and claims/s over that span (the caps are set high enough never to hold a job back);
- overhead p50/p99: per job, (finished_at - created_at) - PROVIDER_SECONDS: the claim wait,
  the state writes, the polls' granularity (0.1 s), the signals;
- wall: stored to the last completion.

The "all" row is the baseline: the same jobs submitted to one `--role all` process (in-memory
fair queue, no claims, no signals); there, "claimed in" is the time to the last start.

PostgreSQL: `VIDEOBOT_BENCH_PG_URL` (an empty database you can spare), else a throwaway cluster
like the tests' (fsync off). Run: `.venv/bin/python -m bench.workers`. Prints a table; not a test.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.core import pct
from bench.store import _pg_urls
from storage.models import GenerateParams, Job, JobKind, JobStatus, Origin
from storage.open import open_store

JOBS = 200
USERS = 20
PROVIDER_SECONDS = 1.0
WORKER_COUNTS = (1, 2, 4)


async def worker_main(duration: float) -> None:
    """One worker process: `videobot run --role worker` with the sleep pipeline registered."""
    from bench.sleep_provider import sleep_pipeline
    from bot.app import open_app
    from bot.cli.run import Worker
    from bot.config import load_settings
    from providers.polling import PollPolicy

    app = await open_app(load_settings())
    data = app.settings.core.data_dir
    app.registry.register("sleep", lambda: sleep_pipeline(duration, data))
    app.registry.get("sleep")
    app.runner.poll_policy = PollPolicy(interval=0.1, min_interval=0.01)
    worker = Worker(app)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await worker.start()
        print("worker ready", flush=True)
        await stop.wait()
    finally:
        await worker.stop()
        await app.close()


def _job(i: int, t: float) -> Job:
    return Job(
        id=f"wb{i:05d}", kind=JobKind.GENERATE, prompt=f"bench clip {i}", pipeline="sleep", status=JobStatus.QUEUED,
        origin=Origin(platform="cli", user_id=f"user{i % USERS}"), params=GenerateParams(seconds=1, size="128x72", seed=i),
        cost_estimate=0.0, created_at=t,
    )  # fmt: skip


def check_completed(jobs: list[Job]) -> None:
    """Every job of the run completed, or the figures mean nothing: stop and say so."""
    failed = [j for j in jobs if j.status is not JobStatus.COMPLETED]
    if len(jobs) != JOBS or failed:
        raise SystemExit(
            f"{len(jobs) - len(failed)} of {JOBS} jobs completed ({len(jobs)} found); "
            f"first problems: {[(j.id, j.status.value, j.error_message) for j in failed[:3]]}"
        )


async def bench(url: str, data: Path, workers: int) -> dict[str, float]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VIDEOBOT_", "SLACK_", "DISCORD_", "OPENAI_"))},
        "VIDEOBOT_DATA_DIR": str(data), "VIDEOBOT_DATABASE_URL": url, "VIDEOBOT_LOG_LEVEL": "WARNING",
        "VIDEOBOT_MAX_CONCURRENT_JOBS": "1000", "VIDEOBOT_MAX_RUNNING_PER_USER": "100", "VIDEOBOT_CLAIM_INTERVAL_SECONDS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }  # fmt: skip
    store = await open_store(url, data_dir=data)  # migrated before the workers open it
    procs = [
        subprocess.Popen([sys.executable, "-m", "bench.workers", "--worker", str(PROVIDER_SECONDS)], env=env, cwd=data,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        for _ in range(workers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.to_thread(proc.stdout.readline)
            assert b"worker ready" in line, line
        t0 = time.time()
        for start in range(0, JOBS, 50):
            await asyncio.gather(*(store.create(_job(i, time.time())) for i in range(start, min(JOBS, start + 50))))
        await store.publish("-", "queued", {})
        while True:
            done = await store.count(statuses=[JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
            if done >= JOBS:
                break
            if time.time() - t0 > 300:
                raise RuntimeError(f"only {done} of {JOBS} jobs ended in 300 s")
            await asyncio.sleep(0.05)
        jobs = await store.list(limit=JOBS)
        check_completed(jobs)
        last_start = max(j.started_at or 0.0 for j in jobs)
        overhead = [(j.finished_at or 0.0) - j.created_at - PROVIDER_SECONDS for j in jobs]
        stored = t0  # the clock starts before the first job is stored, as in the baseline
        makers = {e["runner"] for j in jobs for e in await store.events(j.id) if e.get("runner")}
        # Each worker took part, and only the workers (runner: host~boot/pid/start/token).
        used = {int(str(r).rsplit("/", 3)[1]) for r in makers}
        expected = {proc.pid for proc in procs}
        if used != expected:
            raise SystemExit(f"{workers} workers: jobs were made by pids {sorted(used)}, the workers are {sorted(expected)}")
        return {
            "claimed in s": last_start - stored, "claims/s": JOBS / max(last_start - stored, 1e-6),
            "overhead p50 ms": pct(overhead, 0.5) * 1000, "overhead p99 ms": pct(overhead, 0.99) * 1000,
            "wall s": max(j.finished_at or 0.0 for j in jobs) - t0, "workers used": float(len(makers)),
        }  # fmt: skip
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await store.close()


async def baseline(url: str, data: Path) -> dict[str, float]:
    """The same jobs in one process (role all): the in-memory fair queue, no claims, no signals."""
    from bench.core import make_app

    app = await make_app(data, duration=PROVIDER_SECONDS, concurrent=1000, database_url=url)
    try:
        from bot.core.models import GenerateRequest

        t0 = time.time()
        jobs = await asyncio.gather(*(
            app.service.submit(GenerateRequest(prompt=f"bench clip {i}", pipeline="sleep", seconds=1, size="128x72"), Origin(user_id=f"user{i % USERS}"))
            for i in range(JOBS)
        ))  # fmt: skip
        stored = t0
        done = await asyncio.gather(*(app.runner.wait(j.id) for j in jobs))
        check_completed(done)
        last_start = max(j.started_at or 0.0 for j in done)
        overhead = [(j.finished_at or 0.0) - j.created_at - PROVIDER_SECONDS for j in done]
        return {
            "claimed in s": last_start - stored, "claims/s": JOBS / max(last_start - stored, 1e-6),
            "overhead p50 ms": pct(overhead, 0.5) * 1000, "overhead p99 ms": pct(overhead, 0.99) * 1000,
            "wall s": max(j.finished_at or 0.0 for j in done) - t0, "workers used": 1.0,
        }  # fmt: skip
    finally:
        await app.close()


async def main() -> None:
    fresh, stop = await _pg_urls()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            print(f"\n{JOBS} jobs of {USERS} users stored queued at once; worker processes claim and run them (provider: {PROVIDER_SECONDS:g} s)")
            print(f"{'backend':<12} {'workers':>7} {'claimed in s':>12} {'claims/s':>9} {'overhead p50 ms':>16} {'p99 ms':>8} {'wall s':>7} {'used':>5}")
            for name in ("sqlite", "postgresql"):
                for workers in (0, *WORKER_COUNTS):
                    data = root / f"{name}-{workers}"
                    data.mkdir()
                    url = await fresh() if name == "postgresql" else f"sqlite:///{data / 'videobot.sqlite3'}"
                    row = await (bench(url, data, workers) if workers else baseline(url, data))
                    label = str(workers) if workers else "all"
                    print(f"{name:<12} {label:>7} {row['claimed in s']:>12.2f} {row['claims/s']:>9.0f} {row['overhead p50 ms']:>16.0f} "
                          f"{row['overhead p99 ms']:>8.0f} {row['wall s']:>7.2f} {row['workers used']:>5.0f}")  # fmt: skip
    finally:
        if stop is not None:
            stop()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        asyncio.run(worker_main(float(sys.argv[2])))
    else:
        sys.exit(asyncio.run(main()))
