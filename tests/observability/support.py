"""A real `videobot run` with metrics on, the emulators it talks to, and reading its /metrics.

`OpsWorld` starts the Slack and OpenAI emulators; `bot(...)` starts `videobot run` (Slack in
HTTP mode, the local pipeline as default, OpenAI's sora on the emulator) with
VIDEOBOT_METRICS_PORT set. `Scrape` parses the exposition with prometheus-client's own parser.
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos.process import BotProcess, clean_env, free_port
from tests.fakes.openai_server import OpenAIEmulator
from tests.fakes.slack_api import BOT_TOKEN, SIGNING_SECRET, SlackEmulator
from tests.scaleout import RoleProcess

#: Secrets the runs configure: none may appear in a scrape, a log line or a /readyz body.
OPENAI_KEY = "sk-test-emulator"


class Scrape:
    """One exposition: value of a sample by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = []
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples.append((s.name, dict(s.labels), s.value))

    def value(self, name: str, **labels: str) -> float:
        """The sum over samples of `name` whose labels include `labels` (0 when none)."""
        return sum(v for n, ls, v in self.samples if n == name and all(ls.get(k) == w for k, w in labels.items()))

    def has(self, name: str) -> bool:
        return any(n == name for n, _, _ in self.samples)

    def label_values(self) -> set[str]:
        return {v for _, ls, _ in self.samples for v in ls.values()}


async def scrape(port: int, path: str = "/metrics") -> Scrape:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}{path}")
    response.raise_for_status()
    return Scrape(response.text)


async def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class OpsWorld:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        (work_dir / "openai").mkdir(parents=True, exist_ok=True)
        self.slack = SlackEmulator()
        self.openai = OpenAIEmulator(work_dir / "openai", api_key=OPENAI_KEY)
        self.processes: list[RoleProcess] = []

    async def __aenter__(self) -> OpsWorld:
        await self.slack.start()
        await self.openai.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.processes:
            await proc.terminate()
        await self.openai.stop()
        await self.slack.stop()

    def env(self, **extra: str) -> dict[str, str]:
        settings = {
            "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": self.slack.api_url,
            "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": self.openai.base_url, "OPENAI_VIDEO_BASE_URL": self.openai.base_url,
            "VIDEOBOT_DEFAULT_PIPELINE": "local", "VIDEOBOT_CONFIRM_ABOVE_USD": "", "VIDEOBOT_LOG_FORMAT": "json",
            "VIDEOBOT_HEARTBEAT_SECONDS": "1", "VIDEOBOT_CLAIM_INTERVAL_SECONDS": "0.2",
        }  # fmt: skip
        return clean_env(**{**settings, **extra})

    async def bot(self, *, role: str = "all", name: str = "bot", **extra: str) -> Bot:
        metrics_port = free_port()
        env = self.env(VIDEOBOT_METRICS_PORT=str(metrics_port), **extra)
        proc = RoleProcess(env, role=role, work_dir=self.work_dir, name=name, port=free_port() if role != "worker" else 0)
        proc.start()
        self.processes.append(proc)
        # A worker says it is ready; `all` and gateways serve Slack on their port.
        await (proc.ready() if role == "worker" else BotProcess.ready(proc))
        bot = Bot(proc, metrics_port, self.work_dir)
        await wait_until(bot.serving, what=f"{name}'s /healthz")
        return bot


class Bot:
    def __init__(self, proc: RoleProcess, metrics_port: int, work_dir: Path) -> None:
        self.proc = proc
        self.metrics_port = metrics_port
        self.work_dir = work_dir

    async def serving(self) -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"http://127.0.0.1:{self.metrics_port}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def scrape(self) -> Scrape:
        return await scrape(self.metrics_port)

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.get(f"http://127.0.0.1:{self.metrics_port}{path}")

    def jobs(self) -> list[dict[str, Any]]:
        db = self.work_dir / "data" / "videobot.sqlite3"
        with sqlite3.connect(db) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT id, status, prompt, pipeline, error_code FROM jobs ORDER BY created_at")]

    def job_for(self, prompt: str) -> dict[str, Any] | None:
        return next((j for j in self.jobs() if j["prompt"] == prompt), None)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.proc.logs if p.exists())
