"""The real `videobot run` as a child process: started, killed with SIGKILL, started again.

Each start writes its own log (stdout and stderr together) next to the data directory,
so a failure can show what the process said. The child runs in a scratch working
directory (a developer's `.env` in the repository must not leak into it) and finds this
checkout's code through PYTHONPATH.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Settings prefixes that must come only from the harness, never from the developer's shell.
_PREFIXES = ("VIDEOBOT_", "OPENAI_", "RUNWAYML_", "BFL_", "KLING_", "REPLICATE_", "SLACK_", "DISCORD_")


class BotDied(AssertionError):
    """The process exited on its own (a start-up error, a crash we did not cause)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    # Text lines, as on a terminal: the harnesses grep them for " WARNING " and " ERROR " (JSON is the default off one).
    env["VIDEOBOT_LOG_FORMAT"] = "text"
    env.update(settings)
    return env


class BotProcess:
    """One `videobot run` serving Slack in HTTP mode on `port`; `start()` may be called again after `kill()`."""

    def __init__(self, env: dict[str, str], *, port: int, work_dir: Path, name: str = "bot") -> None:
        self.env = {**env, "SLACK_HTTP_HOST": "127.0.0.1", "SLACK_HTTP_PORT": str(port)}
        self.port = port
        self.work_dir = work_dir
        self.name = name
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        #: Stopped by us (kill or terminate), as opposed to exiting on its own.
        self.stopped = False
        #: time.monotonic() and time.time() of the latest start.
        self.started_at = 0.0
        self.started_wall = 0.0
        self.logs: list[Path] = []
        #: What is run after `python -m bot` (a subclass may add options).
        self.argv: list[str] = ["run"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.alive, "already running"
        self.stopped = False
        self.starts += 1
        log = self.work_dir / f"{self.name}-{self.starts:03d}.log"
        self.logs.append(log)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            self.started_at, self.started_wall = time.monotonic(), time.time()
            # stdin is /dev/null: with Slack configured, `videobot run` serves until it is signalled.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot", *self.argv], cwd=self.work_dir, env=self.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    async def ready(self, timeout: float = 30.0) -> float:
        """Wait until the Slack endpoint accepts connections; returns seconds since start."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise BotDied(f"{self.name} exited with {self.returncode()} before serving:\n{self.log_tail()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} did not serve within {timeout}s:\n{self.log_tail()}") from None
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            return time.monotonic() - self.started_at

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed, like a power cut for this process."""
        assert self.proc is not None
        self.stopped = True
        if self.alive:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    async def terminate(self, timeout: float = 20.0) -> bool:
        """SIGTERM and wait; False (and SIGKILL) when it did not stop in time."""
        if self.proc is None or not self.alive:
            return True
        self.stopped = True
        os.kill(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive:
            if time.monotonic() > deadline:
                self.kill()
                return False
            await asyncio.sleep(0.02)
        return True

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def check_alive(self) -> None:
        """Raise if the process exited without being told to (a crash is a finding, not noise)."""
        if self.proc is not None and not self.stopped and not self.alive:
            raise BotDied(f"{self.name} exited with {self.returncode()} on its own:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40, every: bool = False) -> str:
        chunks = []
        for log in self.logs if every else self.logs[-1:]:
            text = log.read_text(errors="replace").splitlines() if log.exists() else []
            chunks.append(f"--- {log.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(chunks)

    def grep_logs(self, *needles: str) -> list[str]:
        """Log lines of every start that contain one of `needles` (warnings, tracebacks)."""
        found = []
        for log in self.logs:
            if log.exists():
                found += [f"{log.name}: {line}" for line in log.read_text(errors="replace").splitlines() if any(n in line for n in needles)]
        return found
