"""Discord benchmark: how fast /video is deferred while the bot is busy.

200 slash commands arrive at once while 200 jobs are already in flight (each with a
status message being edited), all over loopback against the Discord emulator.
Latency is from the gateway dispatch of INTERACTION_CREATE to the emulator receiving
the defer callback; Discord's deadline is 3 s.

Run: `.venv/bin/python -m bench.discord_defer`. Prints a table; not a test.
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path

from bench.core import pct, table
from bench.sleep_provider import sleep_pipeline
from bot.app import App
from bot.core.models import JobStatus
from providers.polling import PollPolicy
from tests.fakes.discord_api import DiscordBot, DiscordEmulator, Interaction, reset_discord_endpoints, start_bot

IN_FLIGHT = 200
BURST = 200
JOB_SECONDS = 20.0  # the in-flight jobs outlast the measurement


async def wait_answered(interactions: list[Interaction], timeout: float = 60) -> None:
    await asyncio.wait_for(asyncio.gather(*(i.answered.wait() for i in interactions)), timeout)


async def run(root: Path) -> dict[str, float]:
    emu = DiscordEmulator()
    await emu.start()
    os.environ.update(
        {
            "VIDEOBOT_DATA_DIR": str(root / "data"),
            "VIDEOBOT_MAX_CONCURRENT_JOBS": str(IN_FLIGHT + BURST),
            "VIDEOBOT_MAX_RUNNING_PER_USER": "100",
            "VIDEOBOT_MAX_QUEUED_PER_USER": "10000",
            "VIDEOBOT_LOG_LEVEL": "WARNING",
            "DISCORD_TOKEN": "bench-token",
            "DISCORD_API_BASE_URL": emu.api_base,
            "DISCORD_GATEWAY_URL": emu.gateway_url,
            "DISCORD_GUILD_READY_TIMEOUT": "0.2",
            "DISCORD_EDIT_INTERVAL_SECONDS": "3",
        }
    )

    def register(app: App) -> None:
        app.registry.register("sleep", lambda: sleep_pipeline(JOB_SECONDS, root))
        app.runner.poll_policy = PollPolicy(interval=0.1, min_interval=0.01)

    bot: DiscordBot = await start_bot(register=register)
    try:
        options = {"prompt": "benchmark clip", "seconds": 1, "size": "128x72", "pipeline": "sleep"}
        warm = await emu.slash("video", options, user_id="999")
        await wait_answered([warm])

        first = await asyncio.gather(*(emu.slash("video", options, user_id=str(1000 + i % 50)) for i in range(IN_FLIGHT)))
        await wait_answered(list(first))
        await asyncio.sleep(1.0)  # the first wave is queued/running and its status messages are being edited
        running = len(bot.app.runner._tasks)

        t0 = time.perf_counter()
        burst = await asyncio.gather(*(emu.slash("video", options, user_id=str(2000 + i % 50)) for i in range(BURST)))
        await wait_answered(list(burst))
        wall = time.perf_counter() - t0
        latencies = [(i.answered_at or 0) - i.created for i in burst]
        # Let every command finish submitting before shutting down under it.
        expected = 1 + IN_FLIGHT + BURST
        while await bot.app.store.count(statuses=list(JobStatus)) < expected:
            await asyncio.sleep(0.05)
        return {
            "jobs in flight": running,
            "defer p50 ms": pct(latencies, 0.5) * 1000,
            "defer p99 ms": pct(latencies, 0.99) * 1000,
            "defer max ms": max(latencies) * 1000,
            f"burst of {BURST} answered in s": wall,
            "deferred within 3 s": sum(1 for x in latencies if x < 3.0),
        }
    finally:
        await bot.close()
        await emu.stop()
        reset_discord_endpoints()


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="videobot-bench-discord-") as tmp:
        results = await run(Path(tmp))
    table("200 concurrent slash commands, 200 jobs in flight: defer latency", results)


if __name__ == "__main__":
    asyncio.run(main())
