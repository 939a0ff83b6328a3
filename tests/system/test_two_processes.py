"""Two `videobot run` processes on one data directory: each job runs once; kill one, the other finishes.

Both serve Slack in HTTP mode (each on its own port) against one Slack emulator, with the
OpenAI Videos emulator behind the `sora` pipeline. Ten /video commands go to each process,
so each starts and leases its own ten jobs. The emulator holds every video at 50 % until
all twenty are running remotely, which makes the moment of the kill exact: no create is
in flight, every job has its remote id and its status message stored. Then process A gets
SIGKILL and the videos are let go; process B must take over A's jobs at once (a dead
holder on the same host is not waited for) and finish all twenty, each created once,
posted once, shown as done.

The workload goes through Slack because that is how two long-running bots on one data
directory get work in real life; `videobot generate` would only run its own job.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.chaos import BotProcess, DbView, Latency, World, clean_env, free_port, judge
from tests.chaos.emulators import first_poll_after
from tests.chaos.verdict import PIPELINES, settled

pytestmark = pytest.mark.timeout(150)

JOBS_EACH = 10
USERS = ("U0ANN", "U0BEN", "U0CAT", "U0DAN")
#: Same host, dead holder: taken over "at once". Generous for a loaded 2-core machine.
TAKEOVER_SECONDS = 10.0
FINISH_SECONDS = 45.0


def explain(db: DbView, world: World, *procs: BotProcess) -> str:
    """The jobs, what users were told privately and what the processes logged, for a failure message."""
    jobs = db.jobs()
    rows = [f"  {r.id} {r.status} remote={r.remote_id} status_message={r.status_message_id} {r.error_message or ''}" for r in jobs]
    told = [f"  {r.get('text', '')[:160]}" for r in world.slack.responses]
    logged = [line for proc in procs for line in proc.grep_logs(" ERROR ", " WARNING ", "Error:")]
    return "\n".join([f"{len(jobs)} of {2 * JOBS_EACH} jobs recorded:", *rows, "told privately:", *told, "logged:", *logged[:30]])


async def wait_until(check, timeout: float, what: str, db: DbView, world: World, *procs: BotProcess) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        for proc in procs:
            proc.check_alive()
        failed = [r for r in db.jobs() if r.status == "failed"]
        # Every /video here starts a job; a private answer means one was refused.
        if failed or world.slack.responses or time.monotonic() > deadline:
            why = f"{len(failed)} jobs failed" if failed else "a command was refused" if world.slack.responses else f"timed out after {timeout}s"
            raise AssertionError(f"{why} waiting for {what}\n{explain(db, world, *procs)}")
        await asyncio.sleep(0.02)


async def test_two_runners_share_a_data_dir_and_the_survivor_finishes_the_dead_ones_jobs(tmp_path: Path) -> None:
    spec = PIPELINES["sora"]
    data = tmp_path / "data"
    db = DbView(data / "videobot.sqlite3")
    async with World(tmp_path / "emulators", latency=Latency(0, 0, 0, 0, 0)) as world:
        world.openai.hold = True
        env = clean_env(
            **world.env(), VIDEOBOT_DATA_DIR=str(data), VIDEOBOT_LOG_LEVEL="INFO",
            VIDEOBOT_MAX_CONCURRENT_JOBS=str(2 * JOBS_EACH), VIDEOBOT_MAX_RUNNING_PER_USER=str(2 * JOBS_EACH),
        )  # fmt: skip
        a = BotProcess(env, port=free_port(), work_dir=tmp_path / "a", name="a")
        b = BotProcess(env, port=free_port(), work_dir=tmp_path / "b", name="b")
        try:
            a.start()
            await a.ready()  # A migrates the database first; B opens it after
            b.start()
            await b.ready()
            token_of: dict[str, str] = {}
            sent_to: dict[str, str] = {}
            for i in range(2 * JOBS_EACH):
                proc = a if i % 2 == 0 else b
                token = f"tp{i:03d}q"
                prompt = f"two processes clip {token}"
                token_of[prompt], sent_to[prompt] = token, proc.name
                answer = await world.slack.slash(proc.url, "/video", f"{prompt} --pipeline sora {spec.flags}", user_id=USERS[i % len(USERS)])
                assert answer.status == 200, answer.body

            def all_running() -> bool:
                rows = db.jobs()
                return len(rows) == 2 * JOBS_EACH and all(r.status == "running" and r.remote_id and r.status_message_id for r in rows)

            await wait_until(all_running, 40, "all 20 jobs running remotely with their status messages stored", db, world, a, b)
            rows = db.jobs()
            creates = world.creates()
            assert len(creates) == 2 * JOBS_EACH, f"{len(creates)} creates for {2 * JOBS_EACH} jobs while both processes run"

            killed_at = time.monotonic()
            a.kill()
            world.openai.hold = False
            a_jobs = {r.id: r.remote_id for r in rows if sent_to[r.prompt] == "a"}

            def a_jobs_polled() -> bool:
                polls = world.polls()
                return all(first_poll_after(polls, remote, killed_at) is not None for remote in a_jobs.values())

            await wait_until(a_jobs_polled, TAKEOVER_SECONDS, f"B to poll A's {len(a_jobs)} jobs after A was killed", db, world, a, b)
            await wait_until(lambda: all(r.terminal for r in db.jobs()), FINISH_SECONDS, "B to finish all 20 jobs", db, world, a, b)
            await wait_until(lambda: settled(world, db.jobs()), 15, "Slack to show every ending", db, world, a, b)
            assert await b.terminate(), "B did not stop on SIGTERM"
        finally:
            for proc in (a, b):
                if proc.alive:
                    proc.kill()
        rows = db.jobs()
        verdicts = judge(world, db, spec, rows, token_of, kills=[killed_at], submitting_at_kill=set())
        db.close()
    problems = [v.describe() for v in verdicts if v.problems()]
    assert not problems, "\n".join(problems) + "\n" + b.log_tail(every=True)
    assert len(verdicts) == 2 * JOBS_EACH and all(v.status == "completed" for v in verdicts)
