"""Recovery benchmark: how soon a restarted `videobot run` polls the jobs a SIGKILL interrupted.

50 /video commands on the `sora` pipeline go to a real `videobot run` (Slack in HTTP mode
against the Slack emulator, the OpenAI Videos emulator behind `sora`). The emulator holds
every video at 50 % until all 50 are running remotely; then the process gets SIGKILL and
a new `videobot run` is started on the same data directory. Measured per job: the time
from the new process's start (the exec, Python start-up included) to its first poll of
that job's video at the emulator. Then the videos are let go and every job must finish
once (one create, one file message).

Run: `.venv/bin/python -m bench.recovery [--jobs 50]`. Prints a table; not a test.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from bench.core import pct, table
from tests.chaos import BotProcess, DbView, Latency, World, clean_env, free_port, judge
from tests.chaos.emulators import first_poll_after
from tests.chaos.verdict import PIPELINES, settled

USERS = ("U0ANN", "U0BEN", "U0CAT", "U0DAN", "U0EVE")


async def _until(check, timeout: float, what: str, bot: BotProcess) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not check():
        bot.check_alive()
        if time.monotonic() - start > timeout:
            raise SystemExit(f"recovery: timed out after {timeout:g}s waiting for {what}\n{bot.log_tail()}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def run(root: Path, jobs: int) -> dict[str, float | int]:
    spec = PIPELINES["sora"]
    data = root / "data"
    db = DbView(data / "videobot.sqlite3")
    async with World(root / "emulators", latency=Latency(0, 0, 0, 0, 0)) as world:
        world.openai.hold = True
        env = clean_env(
            **world.env(), VIDEOBOT_DATA_DIR=str(data), VIDEOBOT_LOG_LEVEL="WARNING",
            VIDEOBOT_MAX_CONCURRENT_JOBS=str(jobs), VIDEOBOT_MAX_RUNNING_PER_USER=str(min(100, jobs)),
            VIDEOBOT_MAX_QUEUED_PER_USER=str(max(20, jobs)),
        )  # fmt: skip
        bot = BotProcess(env, port=free_port(), work_dir=root / "run")
        try:
            bot.start()
            await bot.ready()
            token_of: dict[str, str] = {}
            for i in range(jobs):
                prompt = f"recovery clip rc{i:03d}q"
                token_of[prompt] = f"rc{i:03d}q"
                answer = await world.slack.slash(bot.url, "/video", f"{prompt} --pipeline sora {spec.flags}", user_id=USERS[i % len(USERS)])
                assert answer.status == 200, answer.body

            def all_running() -> bool:
                rows = db.jobs()
                return len(rows) == jobs and all(r.status == "running" and r.remote_id and r.status_message_id for r in rows)

            await _until(all_running, 120, f"{jobs} jobs running remotely", bot)
            remote = {r.id: str(r.remote_id) for r in db.jobs()}
            killed_at = time.monotonic()
            bot.kill()

            bot.start()
            restarted = bot.started_at
            ready = await bot.ready(60)
            polls = world.polls

            def all_polled() -> bool:
                seen = polls()
                return all(first_poll_after(seen, r, restarted) is not None for r in remote.values())

            await _until(all_polled, 180, "the restarted bot to poll every interrupted job", bot)
            seen = polls()
            first = [first_poll_after(seen, r, restarted) or 0.0 for r in remote.values()]
            world.openai.hold = False
            finish = await _until(lambda: all(r.terminal for r in db.jobs()), 180, "every job to end", bot)
            await _until(lambda: settled(world, db.jobs()), 30, "Slack to show every ending", bot)
            await bot.terminate()
        finally:
            if bot.alive:
                bot.kill()
        verdicts = judge(world, db, spec, db.jobs(), token_of, kills=[killed_at], submitting_at_kill=set())
        db.close()
    for v in verdicts:
        if v.problems():
            print("  " + v.describe(), file=sys.stderr)
    return {
        "interrupted jobs": jobs,
        "restart to serving s": ready,
        "first poll p50 s": pct(first, 0.5),
        "first poll p99 s": pct(first, 0.99),
        "first poll max s": max(first),
        "release to all done s": finish,
        "completed": sum(v.status == "completed" for v in verdicts),
        "duplicated": sum(v.duplicate for v in verdicts),
        "lost": sum(v.lost for v in verdicts),
    }


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="videobot-recovery-") as tmp:
        rows = await run(Path(tmp), args.jobs)
    table(f"recovery: {args.jobs} sora jobs interrupted by SIGKILL while running remotely; times from the new `videobot run` start", rows)
    return 0 if rows["duplicated"] == 0 and rows["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
