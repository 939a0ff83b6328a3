"""Discord benchmark: how fast /video is deferred while the bot is busy.

200 slash commands arrive at once while 200 jobs are in flight (all running, each with a
status message being edited under the pacing budgets), over loopback against the Discord
emulator. Latency is from the emulator dispatching INTERACTION_CREATE on the gateway to it
receiving the defer callback; Discord's deadline is 3 s.

By default the emulator runs in its own process, as Discord does: its work (sending 200
gateway frames, answering every REST call) is not the bot's. `--in-process` runs it on the
bot's event loop instead (how this bench measured before; the emulator's work then counts).
`--runs N` repeats the whole measurement.

Run: `.venv/bin/python -m bench.discord_defer`. Prints a table; not a test.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.core import pct, table
from bench.sleep_provider import sleep_pipeline
from bot.app import App
from bot.core.models import JobStatus
from providers.polling import PollPolicy
from tests.fakes.discord_api import DiscordBot, DiscordEmulator, reset_discord_endpoints, start_bot

IN_FLIGHT = 200
BURST = 200
JOB_SECONDS = 30.0  # the in-flight jobs outlast the measurement
OPTIONS = {"prompt": "benchmark clip", "seconds": 1, "size": "128x72", "pipeline": "sleep"}


class Emulator:
    """What the bench asks of the emulator, wherever it runs."""

    api_base: str
    gateway_url: str

    async def burst(self, count: int, first_user: int) -> list[float]:
        """`count` /video commands at once; their defer latencies in seconds."""
        raise NotImplementedError

    async def status_edits(self) -> int:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


async def _burst(emu: DiscordEmulator, count: int, first_user: int) -> list[float]:
    sent = await asyncio.gather(*(emu.slash("video", OPTIONS, user_id=str(first_user + i % 50)) for i in range(count)))
    await asyncio.wait_for(asyncio.gather(*(i.answered.wait() for i in sent)), 60)
    return [(i.answered_at or 0) - i.created for i in sent]


def _edits(emu: DiscordEmulator) -> int:
    return sum(1 for c in emu.calls if c.method == "PATCH" and "/messages/" in c.path)


class LocalEmulator(Emulator):
    def __init__(self, emu: DiscordEmulator) -> None:
        self.emu = emu
        self.api_base, self.gateway_url = emu.api_base, emu.gateway_url

    @classmethod
    async def start(cls) -> LocalEmulator:
        emu = DiscordEmulator()
        await emu.start()
        return cls(emu)

    async def burst(self, count: int, first_user: int) -> list[float]:
        return await _burst(self.emu, count, first_user)

    async def status_edits(self) -> int:
        return _edits(self.emu)

    async def stop(self) -> None:
        await self.emu.stop()


def _serve(conn: Connection) -> None:
    async def main() -> None:
        emu = DiscordEmulator()
        await emu.start()
        conn.send((emu.api_base, emu.gateway_url))
        loop = asyncio.get_running_loop()
        while True:
            request = await loop.run_in_executor(None, conn.recv)
            if request[0] == "burst":
                conn.send(await _burst(emu, request[1], request[2]))
            elif request[0] == "edits":
                conn.send(_edits(emu))
            else:
                await emu.stop()
                conn.send(None)
                return

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())


class RemoteEmulator(Emulator):
    """The emulator in a process of its own, driven over a pipe."""

    def __init__(self) -> None:
        context = mp.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), daemon=True)

    @classmethod
    async def start(cls) -> RemoteEmulator:
        remote = cls()
        remote._process.start()
        remote.api_base, remote.gateway_url = await remote._receive()
        return remote

    async def _receive(self) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self._conn.recv)

    async def _ask(self, *request: Any) -> Any:
        self._conn.send(request)
        return await self._receive()

    async def burst(self, count: int, first_user: int) -> list[float]:
        return list(await self._ask("burst", count, first_user))

    async def status_edits(self) -> int:
        return int(await self._ask("edits"))

    async def stop(self) -> None:
        await self._ask("stop")
        self._process.join(5)


async def run(root: Path, *, in_process: bool) -> dict[str, float]:
    emu: Emulator = await (LocalEmulator.start() if in_process else RemoteEmulator.start())
    os.environ.update(
        {
            "VIDEOBOT_DATA_DIR": str(root / "data"),
            "VIDEOBOT_MAX_CONCURRENT_JOBS": str(IN_FLIGHT + BURST + 1),
            "VIDEOBOT_MAX_RUNNING_PER_USER": "100",
            "VIDEOBOT_MAX_QUEUED_PER_USER": "10000",
            "VIDEOBOT_LOG_LEVEL": "WARNING",
            # The sleep provider has no price; unpriced models are refused by the spend gate.
            "VIDEOBOT_FREE_MODELS": "sleep",
            "DISCORD_TOKEN": "bench-token",
            "DISCORD_API_BASE_URL": emu.api_base,
            "DISCORD_GATEWAY_URL": emu.gateway_url,
            "DISCORD_GUILD_READY_TIMEOUT": "0.2",
        }
    )

    def register(app: App) -> None:
        app.registry.register("sleep", lambda: sleep_pipeline(JOB_SECONDS, root))
        app.runner.poll_policy = PollPolicy(interval=0.1, min_interval=0.01)

    bot: DiscordBot = await start_bot(register=register)
    try:
        await emu.burst(1, 999)  # warm up
        await emu.burst(IN_FLIGHT, 1000)
        deadline = time.monotonic() + 60
        while len(bot.app.runner._tasks) < IN_FLIGHT + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        running = len(bot.app.runner._tasks)
        if running < IN_FLIGHT:
            raise RuntimeError(f"only {running} of {IN_FLIGHT} jobs got running (see the log)")
        edits_before = await emu.status_edits()
        await asyncio.sleep(1.0)  # every in-flight job is running, its status message edited under the budgets
        edits_per_second = await emu.status_edits() - edits_before

        t0 = time.perf_counter()
        latencies = await emu.burst(BURST, 2000)
        wall = time.perf_counter() - t0
        # Let every command finish submitting before shutting down under it.
        expected = 1 + IN_FLIGHT + BURST
        deadline = time.monotonic() + 60
        while (created := await bot.app.store.count(statuses=list(JobStatus))) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {created} of {expected} commands made a job (see the log)")
            await asyncio.sleep(0.05)
        return {
            "jobs running during the burst": running,
            "status edits per s (before the burst)": edits_per_second,
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-process", action="store_true", help="run the emulator on the bot's event loop")
    parser.add_argument("--runs", type=int, default=1, help="repeat the measurement (the table shows each run's p99 and their median)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: list[dict[str, float]] = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="videobot-bench-discord-") as tmp:
            results.append(await run(Path(tmp), in_process=args.in_process))
    where = "emulator on the bot's loop" if args.in_process else "emulator in its own process"
    summary = dict(results[-1])
    if len(results) > 1:
        p99s = [r["defer p99 ms"] for r in results]
        summary["defer p99 ms, each run"] = " / ".join(f"{p:.0f}" for p in p99s)  # type: ignore[assignment]
        summary["defer p99 ms, median of runs"] = statistics.median(p99s)
    table(f"{BURST} concurrent slash commands, {IN_FLIGHT} jobs in flight ({where}): defer latency", summary)


if __name__ == "__main__":
    asyncio.run(main())
