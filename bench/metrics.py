"""The cost of metrics on the hot path: bench.core's 500-submission burst with metrics off and on.

"On" is what `videobot run` does with VIDEOBOT_METRICS_PORT set: every job write counted at the
store, plus a scrape (the store's gauges read, the exposition rendered) every second during the
burst, as a Prometheus at a 1 s interval would. Runs alternate off/on to spread the noise of a
shared machine; the table shows the median of the runs of each.

Run: `.venv/bin/python -m bench.metrics`. Prints a table; not a test.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench.core as core
from bot.app import open_app

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


SCRAPES: list[float] = []


async def _scrape_every_second(apps: list[Any]) -> None:
    while True:
        await asyncio.sleep(1.0)
        for app in apps:
            if app.metrics is not None:
                start = time.perf_counter()
                await app.metrics.exposition(app.store)
                SCRAPES.append(time.perf_counter() - start)


async def one_run(root: Path, *, metrics: bool) -> dict[str, float]:
    made: list[Any] = []

    async def opener(settings: Any, **kw: Any) -> Any:
        app = await open_app(settings, metrics_role="all" if metrics else None, **kw)
        made.append(app)
        return app

    os.environ["VIDEOBOT_METRICS_PORT"] = "0" if metrics else ""
    core.open_app = opener  # type: ignore[assignment]
    # BENCH_SCRAPE=0: the counting alone, no scrapes.
    scrape = os.environ.get("BENCH_SCRAPE", "1") != "0"
    scraper = asyncio.create_task(_scrape_every_second(made if scrape else []))
    cpu = time.process_time()
    try:
        result = await core.bench_submit_and_lag(root)
        # CPU seconds this process spent: less at the mercy of the other load on a shared machine.
        result["cpu s"] = time.process_time() - cpu
        return result
    finally:
        scraper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scraper


async def main() -> None:
    # The scraper may tick once between a run's app closing and its cancellation: not a finding.
    logging.getLogger("bot.observability.metrics").setLevel(logging.ERROR)
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ROUNDS):
            for on in (False, True):
                results[on].append(await one_run(Path(tmp) / f"{i}-{on}", metrics=on))
    keys = ["submit p50 ms", "submit p99 ms", "loop lag p50 ms", "loop lag p99 ms", "cpu s", "completed"]
    print(f"\n500 concurrent submissions, metrics off vs on (median of {ROUNDS} runs each)")
    print(f"{'metric':<20} {'off':>10} {'on':>10} {'on/off':>8}")
    print("-" * 51)
    for key in keys:
        off = statistics.median(r[key] for r in results[False])
        on = statistics.median(r[key] for r in results[True])
        ratio = on / off if off else float("nan")
        print(f"{key:<20} {off:>10.2f} {on:>10.2f} {ratio:>8.2f}")
    if SCRAPES:
        print(f"scrapes: {len(SCRAPES)}, median {statistics.median(SCRAPES) * 1000:.1f} ms, max {max(SCRAPES) * 1000:.1f} ms")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
