"""Core benchmark: submit latency, event-loop lag, overhead over the provider, RSS.

Run: `make bench` or `.venv/bin/python -m bench.core`. Prints a table; not a test.
"""
from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.sleep_provider import sleep_pipeline
from bot.app import App, open_app
from bot.config import load_settings
from bot.heap import HeapKeeper
from bot.core.models import GenerateRequest, Job, JobStatus, Origin
from providers.polling import PollPolicy


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def _noop(job: Job) -> None:
    return None


async def make_app(data: Path, duration: float, *, concurrent: int, database_url: str = "") -> App:
    os.environ.update(
        {
            "VIDEOBOT_DATA_DIR": str(data),
            "VIDEOBOT_DATABASE_URL": database_url,
            "VIDEOBOT_MAX_CONCURRENT_JOBS": str(concurrent),
            "VIDEOBOT_MAX_RUNNING_PER_USER": "100",
            "VIDEOBOT_MAX_QUEUED_PER_USER": "10000",
            "VIDEOBOT_LOG_LEVEL": "WARNING",
            # The sleep provider has no price; chat submissions of an unpriced model are refused.
            "VIDEOBOT_FREE_MODELS": "sleep",
        }
    )
    app = await open_app(load_settings())
    app.registry.register("sleep", lambda: sleep_pipeline(duration, data))
    app.registry.get("sleep")  # built (its clip rendered) before the clock starts, as after a bot's first job
    app.runner.poll_policy = PollPolicy(interval=0.1, min_interval=0.01)
    app.runner.deliverers["cli"] = _noop
    app.runner.deliverers["slack"] = _noop  # the chat burst's results: posted nowhere
    await app.runner.start(resume=False)
    # As `videobot run` does once started (bot/heap.py): without it a full collection of the
    # long-lived heap (about 145k objects) lands inside the burst and adds ~100 ms to its tail.
    HeapKeeper().settle()
    return app


def request(i: int) -> GenerateRequest:
    return GenerateRequest(prompt=f"benchmark clip {i}", pipeline="sleep", seconds=1, size="128x72")


#: A chat workspace's channel: its submissions read the tenant's settings (the CLI's do not).
CHAT = Origin(platform="slack", workspace_id="TBENCH", channel_id="CBENCH", user_id="")


async def submit_all(app: App, n: int, users: int, *, chat: bool = False) -> tuple[list[Job], list[float]]:
    latencies: list[float] = []

    async def one(i: int) -> Job:
        start = time.perf_counter()
        origin = CHAT.model_copy(update={"user_id": f"U{i % users}"}) if chat else Origin(user_id=f"user{i % users}")
        job = await app.service.submit(request(i), origin)
        latencies.append(time.perf_counter() - start)
        return job

    jobs = await asyncio.gather(*(one(i) for i in range(n)))
    return list(jobs), latencies


async def loop_lag_while(awaitable: asyncio.Future[object]) -> list[float]:
    lags: list[float] = []
    while not awaitable.done():
        start = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - start - 0.01)
    return lags


async def bench_submit_and_lag(root: Path, n: int = 500, *, chat: bool = False) -> dict[str, float]:
    app = await make_app(root / ("chat" if chat else "submit"), duration=3.0, concurrent=n)
    try:
        t0 = time.perf_counter()
        burst = asyncio.ensure_future(submit_all(app, n, users=50, chat=chat))
        burst_lags = await loop_lag_while(burst)  # sampled while the 500 submissions go in
        jobs, latencies = await burst
        submit_wall = time.perf_counter() - t0
        in_flight = await app.store.count(statuses=[s for s in JobStatus if not s.terminal])
        done = asyncio.ensure_future(asyncio.gather(*(app.runner.wait(j.id) for j in jobs)))
        lags = await loop_lag_while(done)
        finished = await done
        ok = sum(1 for j in finished if j.status.value == "completed")
        # The rows say "500 in flight": true when the lag was first sampled after the burst.
        assert in_flight == n, f"only {in_flight} of {n} jobs were in flight after the burst"
        assert ok == n, f"{ok} of {n} completed"
        return {
            "submit p50 ms": pct(latencies, 0.5) * 1000,
            "submit p99 ms": pct(latencies, 0.99) * 1000,
            "submit wall s": submit_wall,
            "lag during burst p99 ms": pct(burst_lags, 0.99) * 1000,
            "lag during burst max ms": max(burst_lags) * 1000,
            f"lag, {n} in flight, p50 ms": pct(lags, 0.5) * 1000,
            f"lag, {n} in flight, p99 ms": pct(lags, 0.99) * 1000,
            f"lag, {n} in flight, max ms": max(lags) * 1000,
            "in flight after burst": in_flight,
            "completed": ok,
        }
    finally:
        await app.close()


async def bench_overhead(root: Path, duration: float = 2.0, n: int = 20) -> dict[str, float]:
    app = await make_app(root / "overhead", duration=duration, concurrent=n)
    try:
        results: list[float] = []

        async def one(i: int) -> None:
            start = time.perf_counter()
            job = await app.service.submit(request(i), Origin(user_id=f"u{i}"))
            await app.runner.wait(job.id)
            results.append(time.perf_counter() - start - duration)

        await one(-1)  # warm-up: pipeline construction, first render of the sample
        results.clear()
        await one(0)
        single = results[0]
        results.clear()
        await asyncio.gather(*(one(i) for i in range(1, n + 1)))
        return {"overhead 1 job ms": single * 1000, f"overhead p50 ({n} jobs) ms": pct(results, 0.5) * 1000, f"overhead p99 ({n} jobs) ms": pct(results, 0.99) * 1000}
    finally:
        await app.close()


async def bench_local_render_lag(root: Path) -> dict[str, float]:
    """The event loop's lag while the local provider renders a clip (it renders in a thread;
    tests/providers/test_local_provider.py checks that, this measures what is left: the GIL's share)."""
    from providers.base import RemoteStatus, VideoRequest
    from providers.local import LocalVideoProvider

    provider = LocalVideoProvider(root / "local-lag", fps=24)
    remote = await provider.submit(VideoRequest(prompt="a busy street", seconds=3, size="640x360", seed=9))
    lags: list[float] = []
    started = time.perf_counter()
    while (await provider.poll(remote.id)).status is not RemoteStatus.COMPLETED:
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - before - 0.01)
    took = time.perf_counter() - started
    await provider.aclose()
    return {"render s (3 s of 640x360)": took, "loop lag p50 ms": pct(lags, 0.5) * 1000,
            "loop lag p99 ms": pct(lags, 0.99) * 1000, "loop lag max ms": max(lags) * 1000}  # fmt: skip


async def bench_rss(root: Path, n: int = 1000) -> dict[str, float]:
    before = rss_mb()
    app = await make_app(root / "rss", duration=5.0, concurrent=n)
    try:
        jobs, _ = await submit_all(app, n, users=100)
        await asyncio.sleep(1.0)
        in_flight = await app.store.count(statuses=[s for s in JobStatus if not s.terminal])
        during = rss_mb()
        # The row's label says n in flight: it must be true when the figure is read.
        assert in_flight == n, f"only {in_flight} of {n} jobs were in flight when RSS was read"
        await asyncio.gather(*(app.runner.wait(j.id) for j in jobs))
        return {"rss before MB": before, f"rss with {n} in flight MB": during, "jobs in flight": in_flight}
    finally:
        await app.close()


def table(title: str, rows: dict[str, float] | dict[str, float | int]) -> None:
    print(f"\n{title}")
    print(f"{'metric':<32} {'value':>12}")
    print("-" * 45)
    for key, value in rows.items():
        print(f"{key:<32} {value:>12.1f}" if isinstance(value, float) else f"{key:<32} {value:>12}")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        table("500 concurrent submissions from the CLI (provider takes 3 s)", await bench_submit_and_lag(root))
        table("500 concurrent submissions in one Slack workspace (its settings read too)", await bench_submit_and_lag(root, chat=True))
        table("overhead = end-to-end minus provider time (2 s)", await bench_overhead(root))
        table("memory", await bench_rss(root))
        table("event loop while the local provider renders", await bench_local_render_lag(root))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
