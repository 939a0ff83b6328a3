"""What the CLI subcommands share: an app for one command, and following a job to its end."""
from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from bot.app import App, open_app
from bot.config import Settings
from bot.core.models import EventKind, Job, JobKind, JobStatus, Origin, ProgressEvent
from bot.core.render import status_line
from bot.core.take_set import failure_lines, is_take, results_of

CLI_ORIGIN = Origin(platform="cli", user_id="local")


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set `stop` (a long-running command stops gracefully)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass


async def deliver_to_out(job: Job) -> dict[str, Any] | None:
    """The CLI's delivery: copy the result where --out asked, if it did. A set of takes goes
    into the --out directory as take-1.mp4 … take-N.mp4 and contact-sheet.png."""
    out = job.origin.extra.get("out")
    if is_take(job):
        return None  # its set's --out got it already; `videobot use --out` copies it itself
    if out and job.kind is JobKind.TAKES:
        await asyncio.to_thread(_copy_takes, job, Path(out))
    elif out and job.output_path:
        dest = Path(out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.copyfile, job.output_path, dest)
    return None


def _copy_takes(job: Job, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for take in results_of(job):
        if take.ok and take.output_path:
            shutil.copyfile(take.output_path, dest / f"take-{take.take}{Path(take.output_path).suffix}")
    if job.output_path:
        shutil.copyfile(job.output_path, dest / "contact-sheet.png")


@asynccontextmanager
async def cli_app(settings: Settings, *, run_jobs: bool = True, metrics_role: str | None = None) -> AsyncIterator[App]:
    """An app for one command. It runs only the jobs this command starts: resuming other
    jobs is `videobot run`'s work, and a one-shot command must not stall on them.
    Without `run_jobs` new jobs are only stored (queued, unleased) for `videobot run`."""
    app = await open_app(settings, metrics_role=metrics_role)
    app.runner.deliverers["cli"] = deliver_to_out
    if run_jobs:
        await app.runner.start(resume=False)
    else:
        app.service.runner = None
    try:
        yield app
    finally:
        await app.close()


def origin_with_out(out: str | None) -> Origin:
    extra = {"out": str(Path(out).resolve())} if out else {}
    return CLI_ORIGIN.model_copy(update={"extra": extra})


async def follow(app: App, job: Job) -> int:
    """Show progress until the job ends; print its id and file. Exit code 0 only on success."""
    print(f"job: {job.id}", flush=True)
    tty = sys.stdout.isatty()
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), transient=True
    ) if tty else None  # fmt: skip
    task_id = progress.add_task("queued", total=100) if progress else None
    last_plain: list[str] = []

    async def show(event: ProgressEvent) -> None:
        if progress is not None and task_id is not None:
            progress.update(task_id, completed=event.progress, description=event.kind.value)
            return
        line = status_line(event)
        # Plain output: one line per state, and progress in 10 % steps, not per tick.
        key = f"{event.kind.value}:{event.progress // 10 if event.kind is EventKind.PROGRESS else ''}"
        if not last_plain or last_plain[-1] != key:
            last_plain.append(key)
            print(f"{job.id} {line}", flush=True)

    sub = app.bus.subscribe(show, lambda e: e.job.id == job.id)
    if progress is not None:
        progress.start()
    try:
        done = await app.runner.wait(job.id)
        await app.bus.drain()
    finally:
        if progress is not None:
            progress.stop()
        app.bus.unsubscribe(sub)
    return report(done)


def report(job: Job) -> int:
    if job.status is JobStatus.COMPLETED and job.kind is JobKind.TAKES:
        for take in results_of(job):
            if take.ok:
                print(f"take {take.take}: {take.output_path} (seed {take.seed}, job {take.job_id})")
        for line in failure_lines(results_of(job)):
            print(line)
        print(f"contact sheet: {job.output_path}")
        print(f"details: videobot show {job.id} · one take alone: videobot use {job.id} N · more like one: videobot more {job.id} N")
        out = job.origin.extra.get("out")
        if out:
            print(f"copied to: {out}")
        return 0
    if job.status is JobStatus.COMPLETED:
        label = "image" if job.kind.value == "image" else "video"
        print(f"{label}: {job.output_path}")
        print(f"details: videobot show {job.id}")
        out = job.origin.extra.get("out")
        if out:
            print(f"copied to: {out}")
        return 0
    if job.status is JobStatus.CANCELLED:
        print(f"videobot: job {job.id} was cancelled.", file=sys.stderr)
        return 3
    print(f"videobot: {job.error_message or 'the job failed.'}", file=sys.stderr)
    return 1
