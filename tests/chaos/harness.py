"""The crash harness: real `videobot run`, real /video commands, SIGKILL in every job state.

One run (`run_chaos`) starts the bot against the emulators, sends /video commands in
waves, and for each planned kill waits until some job is in the target state (read from
the database), waits a seeded random moment more, reads again that a job is still in it,
kills the process with SIGKILL and starts it again. What the dead process left in the
database is the state at the kill: a kill landed (`Kill.hit`) when a job was in the target
state then. A kill that missed is tried again (up to `misses_allowed` per run), and the
run fails, per state, when fewer kills than planned landed there. After the last kill it waits until every job has ended, stops the bot
with SIGTERM, and judges every job (see verdict.py).

After each restart it also measures how soon the new process picks up the jobs that were
in flight: the first poll at the provider of a job that was running remotely, and the
first database write of any job that was past the queue.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.db import STATES, DbView, JobRow
from tests.chaos.emulators import World, first_poll_after
from tests.chaos.process import BotProcess, clean_env, free_port
from tests.chaos.verdict import PIPELINES, JobVerdict, judge, settled

USERS = ("U0ANN", "U0BEN")


@dataclass
class ChaosConfig:
    pipeline: str
    kills: int
    seed: int = 1
    #: Target states in order; None: every state, in a seeded random order per round of five.
    targets: list[str] | None = None
    #: Jobs per wave of commands; more than the concurrency, so that some wait in the queue.
    wave: int = 4
    max_running: int = 2
    #: After the target state is seen, the kill comes within this many seconds (seeded).
    max_delay: float = 0.2
    #: How long to wait for a target state before sending another wave.
    state_timeout: float = 10.0
    #: Every job that was past the queue when the bot was killed must be picked up again this soon
    #: (an interrupted sora create is looked for only after the provider's 10 s grace: allow for it).
    resume_timeout: float = 20.0
    #: Stop at the first restart that misses resume_timeout (tests) or measure on (benchmarks).
    stop_on_stall: bool = True
    finish_timeout: float = 60.0
    #: Once every job has ended: how long Slack may take to show it.
    settle_timeout: float = 10.0
    #: VIDEOBOT_LEASE_SECONDS; None keeps the bot's default (the promise is "takeover without waiting").
    lease_seconds: float | None = None
    #: Kills that missed their state (the job moved on in the last moment) tried again, in all.
    misses_allowed: int | None = None


@dataclass
class Kill:
    index: int
    target: str
    #: The job seen in the target state, and its state once the process was dead.
    job_id: str | None
    state_at_kill: str | None
    killed_at: float
    restarted_at: float = 0.0
    ready_after: float = 0.0
    #: Every job's state once the process was dead.
    states: dict[str, str] = field(default_factory=dict)
    #: Jobs past the queue at the kill: id -> remote id (None before the create was answered).
    in_flight: dict[str, str | None] = field(default_factory=dict)
    #: Jobs whose create the dead process had sent without storing its remote id (its answer died with it).
    unanswered: set[str] = field(default_factory=set)
    #: Seconds from the restart to the first provider poll of each job that was running remotely.
    first_poll: dict[str, float] = field(default_factory=dict)
    #: Seconds from the restart to the first database write of each in-flight job.
    first_write: dict[str, float] = field(default_factory=dict)
    #: In-flight jobs the new process had not touched within resume_timeout.
    stalled: list[str] = field(default_factory=list)

    @property
    def hit(self) -> bool:
        """A job was in the target state when the process died (the watched one, or another)."""
        return self.state_at_kill == self.target or self.target in self.states.values()


@dataclass
class ChaosResult:
    config: ChaosConfig
    kills: list[Kill]
    verdicts: list[JobVerdict]
    elapsed: float
    graceful_stop: bool
    lost_commands: list[str]
    unfinished: list[str]
    log_errors: list[str]
    #: Where each start of the bot wrote its log.
    log_dir: Path
    #: The target state of each planned kill (a missed kill tried again is not planned twice).
    targets: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return sum(v.duplicate for v in self.verdicts)

    @property
    def losses(self) -> int:
        return sum(v.lost for v in self.verdicts) + len(self.lost_commands)

    @property
    def ambiguous(self) -> int:
        return sum(v.ambiguous for v in self.verdicts)

    @property
    def repaid(self) -> int:
        return sum(v.repaid for v in self.verdicts)

    def resume_times(self) -> list[float]:
        """Restart to first poll of a resumed remote job; the first write for the local renderer."""
        samples: list[float] = []
        for kill in self.kills:
            samples += kill.first_poll.values() if self.config.pipeline != "local" else kill.first_write.values()
        return samples

    def stalls(self) -> list[str]:
        return [f"kill {k.index} ({k.target}): not picked up within {self.config.resume_timeout:g}s of the restart: {', '.join(k.stalled)}"
                for k in self.kills if k.stalled]  # fmt: skip

    def planned(self) -> dict[str, int]:
        """Kills asked for, per target state."""
        out: dict[str, int] = {}
        for target in self.targets:
            out[target] = out.get(target, 0) + 1
        return out

    def landed(self) -> dict[str, int]:
        """Kills that landed in their target state, per state."""
        out: dict[str, int] = {}
        for kill in self.kills:
            if kill.hit:
                out[kill.target] = out.get(kill.target, 0) + 1
        return out

    def misses(self) -> list[str]:
        """Per state: fewer kills landed there than were planned."""
        landed = self.landed()
        out = []
        for state, asked in self.planned().items():
            if landed.get(state, 0) < asked:
                seen = [f"kill {k.index}: {k.job_id or 'no job'} was {k.state_at_kill or '-'}, all {sorted(set(k.states.values()))}"
                        for k in self.kills if k.target == state and not k.hit]  # fmt: skip
                out.append(f"{landed.get(state, 0)} of {asked} kills landed in {state}: " + "; ".join(seen))
        return out

    def failures(self) -> list[str]:
        out = [v.describe() for v in self.verdicts if v.problems()]
        out += self.misses()
        out += [f"/video acknowledged but no job recorded: {p!r}" for p in self.lost_commands]
        out += self.stalls()
        out += [f"not ended within {self.config.finish_timeout:g}s: {u}" for u in self.unfinished]
        if not self.graceful_stop:
            out.append("the last process did not stop within 20 s of SIGTERM")
        return out

    def coverage(self) -> dict[str, int]:
        """Kills by the state the watched job was in when the process died."""
        out: dict[str, int] = {}
        for kill in self.kills:
            key = kill.state_at_kill or "?"
            out[key] = out.get(key, 0) + 1
        return out


class Watcher:
    """Reads the job table every few milliseconds; remembers the first write after each restart."""

    def __init__(self, db: DbView) -> None:
        self.db = db
        self.rows: dict[str, JobRow] = {}
        self._since: dict[str, float] = {}
        self.first_write: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="chaos-db-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.db.close()

    def refresh(self) -> None:
        for row in self.db.jobs():
            self.rows[row.id] = row
            since = self._since.get(row.id)
            if since is not None and row.updated_at is not None and row.updated_at > since:
                self.first_write[row.id] = row.updated_at - since
                del self._since[row.id]

    def watch_writes(self, job_ids: list[str], since_wall: float) -> None:
        self._since = {job_id: since_wall for job_id in job_ids}
        self.first_write = {}

    async def _loop(self) -> None:
        while True:
            self.refresh()
            await asyncio.sleep(0.005)


class Chaos:
    def __init__(self, world: World, root: Path, config: ChaosConfig) -> None:
        self.world = world
        self.config = config
        self.spec = PIPELINES[config.pipeline]
        self.data_dir = root / "data"
        self.rng = random.Random(config.seed)
        core = {
            "VIDEOBOT_DATA_DIR": str(self.data_dir), "VIDEOBOT_LOG_LEVEL": "INFO", "VIDEOBOT_LOCAL_FPS": "24",
            "VIDEOBOT_MAX_CONCURRENT_JOBS": str(config.max_running), "VIDEOBOT_MAX_RUNNING_PER_USER": str(config.max_running),
        }  # fmt: skip
        if config.lease_seconds is not None:
            core["VIDEOBOT_LEASE_SECONDS"] = str(config.lease_seconds)
        self.bot = BotProcess(clean_env(**world.env(), **core), port=free_port(), work_dir=root / "run")
        self.db = DbView(self.data_dir / "videobot.sqlite3")
        self.watcher = Watcher(self.db)
        self.token_of: dict[str, str] = {}
        self.lost_commands: list[str] = []
        self.kills: list[Kill] = []
        self.targets = self.plan()  # once: the plan draws from the seeded generator
        self._sent = 0
        self._waves = 0

    # --- the workload -----------------------------------------------------------------------

    async def send_wave(self) -> None:
        self._waves += 1
        prompts = []
        for i in range(self.config.wave):
            self._sent += 1
            token = f"cx{self._sent:03d}q"
            prompt = f"chaos {self.spec.name} wave {self._waves} clip {token}"
            self.token_of[prompt] = token
            sent = await self.world.slack.slash(
                self.bot.url, "/video", f"{prompt} --pipeline {self.spec.name} {self.spec.flags}", user_id=USERS[i % len(USERS)]
            )  # fmt: skip
            assert sent.status == 200, f"/video answered {sent.status}: {sent.body}"
            prompts.append(prompt)
        # The acknowledged commands become jobs; a kill before that is not a job state.
        deadline = time.monotonic() + 15
        while missing := [p for p in prompts if p not in {r.prompt for r in self.watcher.rows.values()}]:
            self.bot.check_alive()
            if time.monotonic() > deadline:
                self.lost_commands += missing
                return
            await asyncio.sleep(0.01)

    def plan(self) -> list[str]:
        if self.config.targets is not None:
            return list(self.config.targets)
        targets: list[str] = []
        while len(targets) < self.config.kills:
            targets += self.rng.sample(STATES, len(STATES))
        return targets[: self.config.kills]

    # --- kills ------------------------------------------------------------------------------

    async def wait_for_state(self, target: str) -> str | None:
        """A job id in `target`, or None when every job has moved past it or ended."""
        deadline = time.monotonic() + self.config.state_timeout
        while time.monotonic() < deadline:
            self.bot.check_alive()
            rows = list(self.watcher.rows.values())
            for row in rows:
                if row.status == target:
                    return row.id
            if rows and all(r.terminal for r in rows):
                return None
            await asyncio.sleep(0.002)
        return None

    async def kill_in(self, index: int, target: str) -> Kill:
        job_id = await self.wait_for_state(target)
        if job_id is None:
            # Nothing left in that state: a new wave brings every state round again.
            await self.send_wave()
            job_id = await self.wait_for_state(target)
        await asyncio.sleep(self.rng.uniform(0, self.config.max_delay))
        if job_id is not None and not any(r.status == target for r in self.db.jobs()):
            # It moved on during the delay: kill at the next job seen there instead.
            job_id = await self.wait_for_state(target) or job_id
        self.bot.check_alive()
        killed_at = time.monotonic()
        self.bot.kill()
        rows = {r.id: r for r in self.db.jobs()}  # the writer is dead: this is what it left
        self.watcher.rows.update(rows)
        kill = Kill(index, target, job_id, rows[job_id].status if job_id else None, killed_at)
        kill.states = {r.id: r.status for r in rows.values()}
        kill.in_flight = {r.id: r.remote_id for r in rows.values() if not r.terminal and r.status != "queued"}
        kill.unanswered = self.db.sent_without_id()
        return kill

    async def restart(self, kill: Kill) -> None:
        self.watcher.watch_writes(list(kill.in_flight), time.time())
        self.bot.start()
        kill.restarted_at = self.bot.started_at
        kill.ready_after = await self.bot.ready()
        running = {j: r for j, r in kill.in_flight.items() if r is not None and kill.states[j] == "running"}
        deadline = kill.restarted_at + self.config.resume_timeout
        while True:
            self.bot.check_alive()
            polls = self.world.polls()
            for job_id, remote_id in running.items():
                if job_id not in kill.first_poll and (t := first_poll_after(polls, remote_id, kill.restarted_at)) is not None:
                    kill.first_poll[job_id] = t
            kill.first_write = dict(self.watcher.first_write)
            untouched = [
                j for j in kill.in_flight
                if j not in kill.first_write and j not in kill.first_poll and not self.watcher.rows[j].terminal
            ]  # fmt: skip
            if not untouched and all(j in kill.first_poll for j in running if not self.watcher.rows[j].terminal):
                return
            if time.monotonic() > deadline:
                kill.stalled = [f"{j} (was {kill.states[j]})" for j in untouched]
                return
            await asyncio.sleep(0.01)

    # --- the whole run ----------------------------------------------------------------------

    async def run(self) -> ChaosResult:
        started = time.monotonic()
        self.watcher.start()
        graceful = True
        unfinished: list[str] = []
        try:
            self.bot.start()
            await self.bot.ready()
            await self.send_wave()
            pending = list(self.targets)
            retries = self.config.misses_allowed if self.config.misses_allowed is not None else len(self.targets)
            while pending:
                target = pending.pop(0)
                kill = await self.kill_in(len(self.kills) + 1, target)
                self.kills.append(kill)
                await self.restart(kill)
                if kill.stalled and self.config.stop_on_stall:
                    break
                if not kill.hit and retries > 0:
                    retries -= 1
                    pending.insert(0, target)
            unfinished = await self.finish()
            graceful = await self.bot.terminate()
        finally:
            if self.bot.alive:
                self.bot.kill()
            await self.watcher.stop()
        self.watcher.refresh()
        rows = sorted(self.db.jobs(), key=lambda r: r.created_at)
        submitting = {j for k in self.kills for j, state in k.states.items() if state == "submitting"}
        unanswered: dict[str, list[float]] = {}
        for k in self.kills:
            for job_id in k.unanswered:
                unanswered.setdefault(job_id, []).append(k.killed_at)
        verdicts = judge(
            self.world, self.db, self.spec, rows, self.token_of, [k.killed_at for k in self.kills], submitting,
            unanswered_at=unanswered,
        )  # fmt: skip
        self.db.close()
        return ChaosResult(
            config=self.config, kills=self.kills, verdicts=verdicts, elapsed=time.monotonic() - started,
            graceful_stop=graceful, lost_commands=self.lost_commands, unfinished=unfinished,
            log_errors=self.bot.grep_logs("Traceback", " ERROR "), log_dir=self.bot.work_dir, targets=self.targets,
        )  # fmt: skip

    async def finish(self) -> list[str]:
        """Wait until every job has ended and Slack shows it; the jobs that did not end."""
        if any(k.stalled for k in self.kills) and self.config.stop_on_stall:
            return [f"{r.id} {r.status} {r.progress}%" for r in self.watcher.rows.values() if not r.terminal]
        deadline = time.monotonic() + self.config.finish_timeout
        while not all(r.terminal for r in self.watcher.rows.values()):
            self.bot.check_alive()
            if time.monotonic() > deadline:
                return [f"{r.id} {r.status} {r.progress}%" for r in self.watcher.rows.values() if not r.terminal]
            await asyncio.sleep(0.02)
        # What is still to come is the last status updates and deliveries: wait for them, not for luck.
        deadline = time.monotonic() + self.config.settle_timeout
        while not settled(self.world, list(self.watcher.rows.values())) and time.monotonic() < deadline:
            self.bot.check_alive()
            await asyncio.sleep(0.02)
        return []


async def run_chaos(world: World, root: Path, config: ChaosConfig) -> ChaosResult:
    return await Chaos(world, root, config).run()


def summary(result: ChaosResult) -> str:
    """One paragraph for a failing test: what went wrong, where the kills landed, the logs."""
    lines = [
        f"{result.config.pipeline}: {len(result.kills)} kills, {len(result.verdicts)} jobs, "
        f"{result.duplicates} duplicated, {result.losses} lost, {result.ambiguous} ambiguous (documented), "
        f"{result.repaid} re-paid image steps, kills by state {result.coverage()}, landed {result.landed()} of {result.planned()}",
        *result.failures(),
    ]
    if result.log_errors:
        lines.append("errors in the bot's logs:")
        lines += result.log_errors[:15]
    lines.append(f"logs of every start: {result.log_dir}")
    return "\n".join(lines)
