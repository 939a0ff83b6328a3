"""One gateway and two workers on one database, as real processes (`videobot run --role ...`).

The gateway serves Slack (HTTP mode) against the Slack emulator; the workers have no chat
connection, claim queued jobs from the store, make them on the OpenAI Videos emulator (the
`sora` pipeline) and post the results with the bot token. What is checked is what crossed
the wire: one create per job at the provider, one file per job in the channel, every status
card (posted and updated only by the gateway) showing "Done"; plus which worker wrote each
job's events, and the most jobs ever taken at once, sampled from the database.
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.chaos import Latency, World, clean_env, free_port, judge
from tests.chaos.emulators import first_poll_after
from tests.chaos.verdict import PIPELINES, settled
from tests.scaleout import RoleProcess, StoreView, TakenSampler
from tests.stores import BACKENDS, backend_url

pytestmark = pytest.mark.timeout(120)

SPEC = PIPELINES["sora"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """"" (SQLite in the data dir) or a fresh PostgreSQL database (skipped where none can run)."""
    return backend_url(request)


def explain(db: StoreView, world: World, *procs: RoleProcess) -> str:
    jobs = db.jobs()
    rows = [f"  {r.id} {r.status} remote={r.remote_id} status_message={r.status_message_id} {r.error_message or ''}" for r in jobs]
    told = [f"  {r.get('text', '')[:160]}" for r in world.slack.responses]
    logged = [line for proc in procs for line in proc.grep_logs(" ERROR ", " WARNING ", "Error:", "Traceback")]
    return "\n".join([f"{len(jobs)} jobs recorded:", *rows, "told privately:", *told, "logged:", *logged[:40]])


async def wait_until(check, timeout: float, what: str, db: StoreView, world: World, *procs: RoleProcess) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        for proc in procs:
            proc.check_alive()
        failed = [r for r in db.jobs() if r.status == "failed"]
        if failed or world.slack.responses or time.monotonic() > deadline:
            why = f"{len(failed)} jobs failed" if failed else "a command was refused" if world.slack.responses else f"timed out after {timeout}s"
            raise AssertionError(f"{why} waiting for {what}\n{explain(db, world, *procs)}")
        await asyncio.sleep(0.05)


def environment(world: World, data: Path, url: str, **extra: str) -> dict[str, str]:
    return clean_env(
        **world.env(), VIDEOBOT_DATA_DIR=str(data), VIDEOBOT_DATABASE_URL=url, VIDEOBOT_LOG_LEVEL="INFO", VIDEOBOT_LEASE_SECONDS="6",
        VIDEOBOT_HEARTBEAT_SECONDS="1", VIDEOBOT_MAX_QUEUED_PER_USER="100", **extra,
    )  # fmt: skip


async def start_all(env: dict[str, str], tmp_path: Path) -> tuple[RoleProcess, RoleProcess, RoleProcess]:
    gateway = RoleProcess(env, role="gateway", port=free_port(), work_dir=tmp_path / "gateway", name="gateway")
    a = RoleProcess(env, role="worker", work_dir=tmp_path / "a", name="worker-a")
    b = RoleProcess(env, role="worker", work_dir=tmp_path / "b", name="worker-b")
    gateway.start()
    await gateway.ready()  # migrates the database first; the workers open it after
    a.start()
    b.start()
    await asyncio.gather(a.ready(), b.ready())
    return gateway, a, b


async def submit(world: World, gateway: RoleProcess, prompts: list[tuple[str, str]]) -> dict[str, str]:
    """(user, token) pairs as /video commands to the gateway; returns prompt -> token."""
    token_of = {}
    for user, token in prompts:
        prompt = f"scale-out clip {token}"
        token_of[prompt] = token
        answer = await world.slack.slash(gateway.url, "/video", f"{prompt} --pipeline sora {SPEC.flags}", user_id=user)
        assert answer.status == 200, answer.body
    return token_of


async def test_a_gateway_and_two_workers_run_thirty_jobs_once_each_under_the_caps(tmp_path: Path, database_url: str) -> None:
    data = tmp_path / "data"
    db = StoreView(database_url, data)
    async with World(tmp_path / "emulators", latency=Latency(0, 0, 0, 0, 0)) as world:
        world.openai.seconds_to_complete = 0.4
        # Four at once across both workers, though each could take three: the cap is the store's.
        env = environment(world, data, database_url, VIDEOBOT_MAX_CONCURRENT_JOBS="4", VIDEOBOT_MAX_RUNNING_PER_USER="2", VIDEOBOT_WORKER_SLOTS="3")
        gateway, a, b = await start_all(env, tmp_path)
        procs = (gateway, a, b)
        try:
            with TakenSampler(database_url, data) as taken:
                # One user asks for twelve first; three others for six each after: they all get turns.
                prompts = [("U0ANN", f"w{i:03d}q") for i in range(12)]
                prompts += [(user, f"w{12 + 3 * i + k:03d}q") for i in range(6) for k, user in enumerate(("U0BEN", "U0CAT", "U0DAN"))]
                token_of = await submit(world, gateway, prompts)
                await wait_until(lambda: len(db.jobs()) == 30 and all(r.terminal for r in db.jobs()), 60, "30 jobs to finish", db, world, *procs)
                await wait_until(lambda: settled(world, db.jobs()), 15, "Slack to show every ending", db, world, *procs)
            rows = db.jobs()
            verdicts = judge(world, db, SPEC, rows, token_of, kills=[], submitting_at_kill=set())
            problems = [v.describe() for v in verdicts if v.problems()]
            assert not problems, "\n".join(problems) + "\n" + explain(db, world, *procs)
            assert len(verdicts) == 30 and all(v.status == "completed" for v in verdicts)
            assert len(world.creates()) == 30, f"{len(world.creates())} creates at the provider for 30 jobs"
            # Which worker made each job: both took part, and the gateway ran none.
            made_by = {row.id: db.runner_pids(row.id) for row in rows}
            assert all(len(pids) == 1 for pids in made_by.values()), made_by
            used = {pid for pids in made_by.values() for pid in pids}
            assert used == {a.pid, b.pid}, f"jobs were made by {used}; workers are {a.pid} and {b.pid}, the gateway {gateway.pid}"
            taken.require(50)
            assert taken.max_total <= 4, f"{taken.max_total} jobs taken at once (cap 4 across the workers)"
            assert taken.max_per_user <= 2, f"one user had {taken.max_per_user} jobs taken at once (cap 2)"
            assert taken.max_total == 4, "the workers never filled the cap: the sampler or the claims are off"
            # Progress rendered by the gateway: cards updated while the jobs ran elsewhere.
            updates = world.slack.calls_to("chat.update")
            running = [c for c in updates if "🎬" in str(c.args.get("text", ""))]  # the progress bar (render.status_line)
            assert running, f"no progress shown on any card ({len(updates)} chat.update calls)"
            assert all(c.status == 200 for c in updates)
            for proc in procs:
                assert await proc.terminate(), f"{proc.name} did not stop on SIGTERM"
        finally:
            for proc in procs:
                if proc.alive:
                    proc.kill()
            db.close()


async def test_a_killed_workers_jobs_are_taken_over_by_the_other_and_delivered_once(tmp_path: Path, database_url: str) -> None:
    data = tmp_path / "data"
    db = StoreView(database_url, data)
    async with World(tmp_path / "emulators", latency=Latency(0, 0, 0, 0, 0)) as world:
        world.openai.seconds_to_complete = 0.4
        world.openai.hold = True  # every video waits at 50 % until released: the kill lands mid-job
        env = environment(world, data, database_url, VIDEOBOT_MAX_CONCURRENT_JOBS="6", VIDEOBOT_MAX_RUNNING_PER_USER="6", VIDEOBOT_WORKER_SLOTS="3")
        gateway, a, b = await start_all(env, tmp_path)
        procs = (gateway, a, b)
        try:
            with TakenSampler(database_url, data) as taken:
                users = ("U0ANN", "U0BEN", "U0CAT")
                token_of = await submit(world, gateway, [(users[i % 3], f"k{i:03d}q") for i in range(12)])

                def six_running() -> bool:
                    running = [r for r in db.jobs() if r.status == "running" and r.remote_id and r.status_message_id]
                    return len(running) == 6

                await wait_until(six_running, 40, "six jobs running remotely (three per worker)", db, world, *procs)
                rows = db.jobs()
                held = {r.id: db.runner_pids(r.id) for r in rows if r.status == "running"}
                a_jobs = {r.id: r.remote_id for r in rows if held.get(r.id) == {a.pid}}
                assert len(a_jobs) == 3, f"worker A holds {len(a_jobs)} jobs, expected 3: {held}"
                killed_at = time.monotonic()
                a.kill()
                world.openai.hold = False

                def a_jobs_polled() -> bool:
                    polls = world.polls()
                    return all(first_poll_after(polls, remote, killed_at) is not None for remote in a_jobs.values())

                await wait_until(a_jobs_polled, 15, "worker B to poll A's jobs", db, world, gateway, b)
                await wait_until(lambda: all(r.terminal for r in db.jobs()), 45, "B to finish all 12 jobs", db, world, gateway, b)
                await wait_until(lambda: settled(world, db.jobs()), 15, "Slack to show every ending", db, world, gateway, b)
            rows = db.jobs()
            verdicts = judge(world, db, SPEC, rows, token_of, kills=[killed_at], submitting_at_kill=set())
            problems = [v.describe() for v in verdicts if v.problems()]
            assert not problems, "\n".join(problems) + "\n" + explain(db, world, *procs)
            assert len(verdicts) == 12 and all(v.status == "completed" for v in verdicts)
            for job_id in a_jobs:
                assert db.runner_pids(job_id) == {a.pid, b.pid}, f"job {job_id} was not finished by B"
            taken.require(50)
            assert taken.max_total <= 6, f"{taken.max_total} jobs taken at once (cap 6), during the takeover"
            assert taken.max_total == 6, "the sampler never saw the six jobs the database showed running"
            for proc in (gateway, b):
                assert await proc.terminate(), f"{proc.name} did not stop on SIGTERM"
        finally:
            for proc in procs:
                if proc.alive:
                    proc.kill()
            db.close()


async def test_a_local_render_of_a_killed_worker_is_finished_by_the_other_from_the_shared_media_dir(tmp_path: Path) -> None:
    """Issue 19, item 9: workers with their own data directories and one shared media directory
    (README, "Past one machine"). A worker killed mid-render leaves the render's spec in the
    media directory, so the survivor renders the clip again (free, deterministic) instead of
    failing it as lost; one job row, one file in the channel."""
    shared = tmp_path / "shared"  # the database (one machine: SQLite is shared) and the media volume
    media = shared / "media"
    db = StoreView("", shared)
    spec = PIPELINES["local"]
    async with World(tmp_path / "emulators", latency=Latency(0, 0, 0, 0, 0)) as world:

        def env_for(name: str) -> dict[str, str]:
            return environment(
                world, tmp_path / f"data-{name}", f"sqlite:///{shared / 'videobot.sqlite3'}", VIDEOBOT_MEDIA_DIR=str(media),
                VIDEOBOT_MAX_CONCURRENT_JOBS="2", VIDEOBOT_MAX_RUNNING_PER_USER="2", VIDEOBOT_WORKER_SLOTS="1",
            )  # fmt: skip

        gateway = RoleProcess(env_for("gateway"), role="gateway", port=free_port(), work_dir=tmp_path / "gateway", name="gateway")
        a = RoleProcess(env_for("a"), role="worker", work_dir=tmp_path / "a", name="worker-a")
        b = RoleProcess(env_for("b"), role="worker", work_dir=tmp_path / "b", name="worker-b")
        procs = (gateway, a, b)
        try:
            gateway.start()
            await gateway.ready()
            a.start()
            b.start()
            await asyncio.gather(a.ready(), b.ready())
            prompt = "a teal coupe crossing a desert, taken over"
            # Long enough (12 s of 1280x720 frames) that the kill lands while it renders.
            answer = await world.slack.slash(gateway.url, "/video", f"{prompt} --pipeline local --seconds 12 --size 1280x720")
            assert answer.status == 200, answer.body

            def rendering() -> bool:
                rows = db.jobs()
                return len(rows) == 1 and rows[0].status == "running" and bool(rows[0].remote_id) and 0 < rows[0].progress < 100

            await wait_until(rendering, 30, "the local render to start", db, world, *procs)
            (row,) = db.jobs()
            holder = {a.pid: a, b.pid: b}[next(iter(db.runner_pids(row.id)))]
            survivor = b if holder is a else a
            holder.kill()
            finished = list(tmp_path.rglob(f"{row.remote_id}.mp4"))
            assert not finished, f"the render finished before the kill ({finished}): make the clip longer"
            await wait_until(lambda: all(r.terminal for r in db.jobs()), 60, "the survivor to finish the job", db, world, gateway, survivor)
            await wait_until(lambda: settled(world, db.jobs()), 15, "Slack to show the ending", db, world, gateway, survivor)
            rows = db.jobs()
            assert len(rows) == 1, f"{len(rows)} job rows for one command"
            verdicts = judge(world, db, spec, rows, {prompt: prompt}, kills=[time.monotonic()], submitting_at_kill=set())
            problems = [v.describe() for v in verdicts if v.problems()]
            assert not problems, "\n".join(problems) + "\n" + explain(db, world, *procs)
            assert rows[0].remote_id == row.remote_id, "the survivor made a new render instead of resuming the job's own"
            assert db.runner_pids(row.id) == {holder.pid, survivor.pid}, "the job was not finished by the survivor"
            for proc in (gateway, survivor):
                assert await proc.terminate(), f"{proc.name} did not stop on SIGTERM"
        finally:
            for proc in procs:
                if proc.alive:
                    proc.kill()
            db.close()


def test_every_provider_keeps_its_per_job_state_in_the_shared_media_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a provider keeps beside a remote job (the local render's spec and clip, fal's URLs,
    Runway's extend source, ComfyUI's workflow and GPU time) must be where a worker taking the job
    over finds it: the media directory every worker mounts, never one worker's data directory."""
    from bot.config import load_settings
    from bot.pipelines import build_registry

    for key in [k for k in os.environ if k.startswith(("VIDEOBOT_", "FAL_", "RUNWAYML_", "COMFYUI_"))]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIDEOBOT_DATA_DIR", str(tmp_path / "worker-data"))
    monkeypatch.setenv("VIDEOBOT_MEDIA_DIR", str(tmp_path / "shared-media"))
    registry = build_registry(load_settings())
    media = (tmp_path / "shared-media").resolve()
    checked = set()
    for name in registry.names():  # every pipeline, so a provider added later is held to it too
        pipeline = registry.get(name)
        for part in (pipeline.video, pipeline.image):
            for holder in (part, getattr(part, "jobs", None)):  # ComfyUI keeps it in its jobs helper
                if holder is not None and getattr(holder, "work_dir", None) is not None:
                    work_dir = Path(holder.work_dir).resolve()
                    assert work_dir.is_relative_to(media), f"{name} keeps its per-job state in {work_dir}, outside the shared {media}"
                    checked.add(getattr(part, "name", name))
    assert {"local", "fal", "runway", "comfyui"} <= checked, f"only {sorted(checked)} were checked"
