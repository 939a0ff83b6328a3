"""Slack benchmark: how fast /video is acknowledged while the bot is busy.

200 signed /video requests arrive at once, over real loopback HTTP, while 200 jobs are
already in flight (each with a status card whose updates share the workspace's chat.update
budget through the emulated Web API). Latency is from sending the request to receiving the
bot's HTTP answer (the ack); Slack's deadline is 3 s, the target p99 is 50 ms. Jobs use a
provider that takes a known time (bench.sleep_provider).

Run: `.venv/bin/python -m bench.slack_ack`. Prints a table; not a test.
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.core import pct, table
from bench.sleep_provider import sleep_pipeline
from bot.app import App
from bot.core.models import JobStatus
from providers.polling import PollPolicy
from tests.fakes.slack_api import BOT_TOKEN, SIGNING_SECRET, SlackEmulator, start_slack_bot

IN_FLIGHT = 200
BURST = 200
JOB_SECONDS = 20.0  # the in-flight jobs outlast the measurement
COMMAND = "benchmark clip --seconds 1 --size 128x72 --pipeline sleep"


def status_posts(emu: SlackEmulator) -> int:
    return sum(1 for c in emu.calls_to("chat.postMessage") if c.status == 200)


async def run(root: Path) -> dict[str, float | int]:
    emu = SlackEmulator()
    await emu.start()
    emu.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    os.environ.update(
        {
            "VIDEOBOT_DATA_DIR": str(root / "data"),
            "VIDEOBOT_MAX_CONCURRENT_JOBS": str(IN_FLIGHT + BURST),
            "VIDEOBOT_MAX_RUNNING_PER_USER": "100",
            "VIDEOBOT_MAX_QUEUED_PER_USER": "10000",
            "VIDEOBOT_LOG_LEVEL": "WARNING",
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": emu.api_url,
            "SLACK_HTTP_HOST": "127.0.0.1",
            "SLACK_HTTP_PORT": "0",
            "SLACK_UPDATE_BUDGET": "50",
            "SLACK_UPDATE_WINDOW_SECONDS": "60",
        }
    )
    os.environ.pop("SLACK_APP_TOKEN", None)

    def register(app: App) -> None:
        app.registry.register("sleep", lambda: sleep_pipeline(JOB_SECONDS, root))
        app.runner.poll_policy = PollPolicy(interval=0.1, min_interval=0.01)

    bot = await start_slack_bot(register=register)
    try:
        warm = await emu.slash(bot.url, "/video", COMMAND, user_id="U999")
        assert warm.status == 200, warm

        first = await asyncio.gather(*(emu.slash(bot.url, "/video", COMMAND, user_id=f"U{1000 + i % 50}") for i in range(IN_FLIGHT)))
        assert all(s.status == 200 for s in first)
        while status_posts(emu) < 1 + IN_FLIGHT:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the first wave's progress flowing
        running = len(bot.app.runner._tasks)
        updates_before = len(emu.calls_to("chat.update"))
        u0 = time.perf_counter()

        t0 = time.perf_counter()
        burst = await asyncio.gather(*(emu.slash(bot.url, "/video", COMMAND, user_id=f"U{2000 + i % 50}") for i in range(BURST)))
        wall = time.perf_counter() - t0
        assert all(s.status == 200 for s in burst), [s.status for s in burst if s.status != 200][:5]
        latencies = [s.elapsed for s in burst]
        expected = 1 + IN_FLIGHT + BURST
        while status_posts(emu) < expected:
            await asyncio.sleep(0.02)
        posted = time.perf_counter() - t0
        updates = len(emu.calls_to("chat.update")) - updates_before
        per_minute = updates / (time.perf_counter() - u0) * 60
        while await bot.app.store.count(statuses=list(JobStatus)) < expected:
            await asyncio.sleep(0.05)
        return {
            "jobs in flight": running,
            "ack p50 ms": pct(latencies, 0.5) * 1000,
            "ack p99 ms": pct(latencies, 0.99) * 1000,
            "ack max ms": max(latencies) * 1000,
            "acked within 3 s": sum(1 for x in latencies if x < 3.0),
            f"burst of {BURST} acked in s": wall,
            f"all {BURST} status messages posted in s": posted,
            "chat.update calls meanwhile": updates,
            "chat.update per minute (budget 50)": per_minute,
        }
    finally:
        await bot.close()
        await emu.session.close()
        await emu.stop()


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="videobot-bench-slack-") as tmp:
        results = await run(Path(tmp))
    table("200 concurrent /video commands, 200 jobs in flight: ack latency", results)


if __name__ == "__main__":
    asyncio.run(main())
