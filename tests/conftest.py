"""Shared fixtures: real settings on tmp_path, a real store, the real runner."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import App, open_app
from bot.config import Settings, load_settings

# Keep a developer's own keys and .env out of every test.
_PREFIXES = ("VIDEOBOT_", "OPENAI_", "RUNWAYML_", "BFL_", "FAL_", "KLING_", "REPLICATE_", "COMFYUI_", "SLACK_", "DISCORD_", "GOOGLE_", "GEMINI_")


@pytest.fixture
def database_url() -> str:
    """Empty: SQLite in the data dir. A module overrides this fixture (tests.stores.backend_url)
    to run its tests on PostgreSQL too."""
    return ""


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Settings:
    for key in list(os.environ):
        if key.startswith(_PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIDEOBOT_DATA_DIR", str(tmp_path / "data"))
    if database_url:
        monkeypatch.setenv("VIDEOBOT_DATABASE_URL", database_url)
    monkeypatch.setenv("VIDEOBOT_LOCAL_FPS", "12")
    return load_settings()


async def _noop_deliver(job: object) -> None:
    return None


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[App]:
    """The whole core on the local provider, started, delivering nowhere (like the CLI)."""
    application = await open_app(settings)
    application.runner.deliverers["cli"] = _noop_deliver
    await application.runner.start()
    try:
        yield application
    finally:
        await application.close()

pytest_plugins = ["tests.pg", "tests.stores", "tests.fakes.openai_server", "tests.fakes.runway_server", "tests.fakes.bfl_server", "tests.fakes.kling_server", "tests.fakes.replicate_server"]  # emulator fixtures
