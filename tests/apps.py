"""Apps for end-to-end tests: the real core, settings from the environment, fast polling, no chat.

One factory instead of a copy per test module: `apps = AppMaker(monkeypatch, base_env)`,
`app = await apps.make(**extra_env)` (None removes a variable), `await apps.close()`.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import pytest

from bot.app import App, open_app
from bot.config import load_settings
from bot.core.models import Job
from providers.polling import PollPolicy

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
