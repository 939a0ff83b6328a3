"""A chat on stdin/stdout that speaks the users' commands (`/video a fox --seconds 8`).

It is the adapter `videobot run` falls back to when no chat platform is configured,
and the quickest way to try the bot. Piped input works too: it runs every command,
then exits once the jobs it started are done.

Like every adapter it only translates: commands go through the core's parser and
dispatcher, and a job's progress is the core's `StatusView` line, printed.
"""
from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any, TextIO

from bot.app import App
from bot.core.commands import parse_command
from bot.core.dispatch import is_help, run_command
from bot.core.errors import user_message
from bot.core.help import deployment_help
from bot.core.models import EventKind, Job, JobKind, Origin, ProgressEvent
from bot.core.service import JobService
from bot.core.take_set import failure_lines, results_of, suppressed
from bot.core.views import Action, Phase, StatusView, status_view
from bot.core.errors import VideobotError

PLATFORM = "console"


class ConsoleAdapter:
    platform = PLATFORM

    def __init__(self, app: App, *, stdin: TextIO | None = None, stdout: TextIO | None = None, user_id: str = "console") -> None:
        self.app = app
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.origin = Origin(platform=PLATFORM, user_id=user_id, channel_id="console")
        self._started: set[str] = set()
        self._last: dict[str, str] = {}
        #: The button hint last shown per job (shown again only when it changes).
        self._buttons: dict[str, str] = {}
        self._reader: asyncio.Task[None] | None = None

    @property
    def service(self) -> JobService:
        """The core's one door, as the chat adapters' parts reach it (deps.Core)."""
        return self.app.service

    def say(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    async def start(self) -> None:
        # The CLI's jobs too: `videobot run` resumes them, and shows how they end.
        self.app.bus.subscribe(self._on_event, lambda e: e.job.origin.platform in (PLATFORM, "cli"))
        self.say("videobot console. Type /help for commands.")
        self._reader = asyncio.create_task(self._read_loop())

    async def wait_closed(self) -> None:
        if self._reader is not None:
            await self._reader

    async def announce(self, job: Job) -> None:
        return None  # every event of a console job is printed already

    async def stop(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def deliver(self, job: Job) -> dict[str, Any] | None:
        # The file is already where the user can open it; the completed line shows the path.
        return None

    async def handle_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            command = parse_command(line, default="video")
            if is_help(command):
                self.say((await deployment_help(self.service, self.origin)).plain_text())
                return
            reply = await run_command(self.service, command, self.origin)
        except VideobotError as exc:
            self.say(f"error: {user_message(exc)}")
            return
        if reply.started and reply.job is not None:
            self._started.add(reply.job.id)
        self.say(reply.text)

    def _start_reader_thread(self) -> asyncio.Queue[str]:
        """Lines from stdin through a daemon thread: a stop never waits for a terminal that
        has nothing to say (a worker thread blocked in readline would hold the exit)."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def read() -> None:
            while True:
                try:
                    line = self.stdin.readline()
                except (OSError, ValueError):
                    line = ""
                try:
                    loop.call_soon_threadsafe(lines.put_nowait, line)
                except RuntimeError:
                    return  # the loop is closed: the bot has stopped
                if not line:
                    return

        threading.Thread(target=read, name="console-stdin", daemon=True).start()
        return lines

    async def _read_loop(self) -> None:
        lines = self._start_reader_thread()
        while True:
            line = await lines.get()
            if not line:
                break
            await self.handle_line(line)
        # End of input: finish what was started here and every job this runner resumed, then close.
        pending = [self.app.runner.wait(job_id) for job_id in self._started]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await self.app.runner.idle()
        await self.app.bus.drain()

    async def _on_event(self, event: ProgressEvent) -> None:
        job = event.job
        if job.state.get("story_scene") or suppressed(job):
            return  # a story's scene, a set's take: its story's (set's) own line says how it goes
        view = status_view(job, event)
        # Progress in 25 % steps keeps a terminal readable; every other state is shown.
        key = f"{event.kind.value}:{(view.percent or 0) // 25}" if view.phase is Phase.RUNNING else view.phase.value
        if event.kind is EventKind.QUEUED:
            key += f":{view.position}"
        if self._last.get(job.id) == key:
            return
        self._last[job.id] = key
        # The console is its owner's own screen: a failure is said in full, not as the channel's short line.
        self.say(f"[{job.id}] ❌ {view.error}" if view.phase is Phase.FAILED and view.error else f"[{job.id}] {view.line}")
        if view.phase is Phase.DONE and job.kind is JobKind.TAKES:
            for take in results_of(job):
                if take.ok:
                    self.say(f"[{job.id}] take {take.take} (seed {take.seed}): {take.output_path}")
            for line in failure_lines(results_of(job)):
                self.say(f"[{job.id}] {line}")
            self.say(f"[{job.id}] contact sheet: {job.output_path}")
        elif view.phase is Phase.DONE and job.output_path:
            label = "image" if job.kind.value == "image" else "video"
            self.say(f"[{job.id}] {label}: {job.output_path}")
        hint = buttons(view)
        if hint and self._buttons.get(job.id) != hint:
            # The console's buttons: what to type for each one the view offers.
            self._buttons[job.id] = hint
            self.say(f"[{job.id}] {hint}")
        if view.final:
            self._last.pop(job.id, None)
            self._buttons.pop(job.id, None)


#: A button as typed on the console (no buttons on a terminal; the same command does it).
TYPED = {
    Action.CANCEL: "/cancel {id}", Action.REROLL: "/reroll {id}", Action.REMIX: "/remix {id} PROMPT",
    Action.EXTEND: "/extend {id} [--seconds N] [PROMPT]", Action.DELETE: "/delete {id}", Action.ANIMATE: "/animate {id} [PROMPT]",
    Action.USE: "/use {id} N", Action.MORE_LIKE: "/more {id} N",
}  # fmt: skip


def buttons(view: StatusView) -> str:
    """`next: /reroll ID · /remix ID PROMPT · ...` for the buttons the view offers ('' for none)."""
    typed = [TYPED[a].format(id=view.job_id) for a in view.actions if a in TYPED]
    return ("next: " + " · ".join(typed)) if typed else ""
