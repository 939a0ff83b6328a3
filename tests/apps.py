"""Apps for end-to-end tests: the real core, settings from the environment, fast polling, no chat.

One factory instead of a copy per test module: `apps = AppMaker(monkeypatch, base_env)`,
`app = await apps.make(**extra_env)` (None removes a variable), `await apps.close()` (or
`async with AppMaker(...) as apps:`); and what those tests do with an app (`run_job`, `until`,
`until_job`).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TypeVar

import pytest

from bot.app import App, open_app
from bot.config import load_settings
from bot.core.models import GenerateRequest, Job, Origin
from providers.polling import PollPolicy

T = TypeVar("T")
FAST = PollPolicy(interval=0.01, min_interval=0.01, backoff_base=0.01, backoff_max=0.05)
AppFactory = Callable[..., Awaitable[App]]


async def no_delivery(job: Job) -> None:
    return None


class AppMaker:
    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, base_env: dict[str, str], *, platforms: Iterable[str] = ("cli",),
        poll: PollPolicy = FAST,
    ) -> None:
        self.monkeypatch = monkeypatch
        self.base_env = base_env
        self.platforms = tuple(platforms)
        self.poll = poll
        self.apps: list[App] = []

    async def make(self, start: bool = True, **env: str | None) -> App:
        for key, value in {**self.base_env, **env}.items():
            if value is None:
                self.monkeypatch.delenv(key, raising=False)
            else:
                self.monkeypatch.setenv(key, value)
        app = await open_app(load_settings())
        app.runner.poll_policy = self.poll
        for platform in self.platforms:
            app.runner.deliverers[platform] = no_delivery
        if start:
            await app.runner.start()
        self.apps.append(app)
        return app

    async def close(self) -> None:
        for app in self.apps:
            await app.close()

    async def __aenter__(self) -> AppMaker:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def run_job(app: App, request: GenerateRequest, origin: Origin, timeout: float = 30.0) -> Job:
    """Submit as `origin` and wait for the job to end."""
    job = await app.service.submit(request, origin)
    return await asyncio.wait_for(app.runner.wait(job.id), timeout)


async def until(check: Callable[[], Awaitable[T]], what: str, timeout: float = 10.0) -> T:
    """What `check` returns once it is truthy; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)
    return value


async def until_job(app: App, job_id: str, check: Callable[[Job], bool], what: str, timeout: float = 15.0) -> Job:
    """The stored job once `check` holds for it (read from the store, as another process would)."""
    deadline = time.monotonic() + timeout
    while True:
        job = await app.store.get(job_id)
        if job is not None and check(job):
            return job
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)
