"""`videobot doctor` (the real CLI, a subprocess) against the loopback emulators, with good and bad keys."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.chaos.process import clean_env
from tests.fakes.comfyui_server import ComfyUIServer
from tests.fakes.discord_api import DiscordEmulator
from tests.fakes.fal_server import KEY as FAL_KEY
from tests.fakes.fal_server import FalServer
from tests.fakes.openai_server import OpenAIEmulator
from tests.fakes.runway_server import SECRET as RUNWAY_SECRET
from tests.fakes.runway_server import RunwayServer
from tests.fakes.slack_api import BOT_TOKEN, SIGNING_SECRET, SlackEmulator

DISCORD_TOKEN = "discord-test-token.abc.def"
COMFY_HEADER = ("Authorization", "Bearer comfy-test-secret")
SERVICES = ("OpenAI", "Runway", "fal", "ComfyUI", "Slack", "Discord")


class Services:
    def __init__(self, root: Path) -> None:
        (root / "openai").mkdir(parents=True)
        self.openai = OpenAIEmulator(root / "openai", api_key="sk-doctor-good")
        self.runway = RunwayServer(root / "runway")
        self.fal = FalServer(root / "fal")
        self.comfy = ComfyUIServer(root / "comfy")
        self.comfy.required_headers = dict([COMFY_HEADER])
        self.slack = SlackEmulator()
        self.discord = DiscordEmulator()
        self.discord.bot_token = DISCORD_TOKEN

    def env(self, *, good: bool, **extra: str) -> dict[str, str]:
        bad = "" if good else "x"
        return clean_env(
            OPENAI_API_KEY="sk-doctor-good" + bad, OPENAI_BASE_URL=self.openai.base_url,
            RUNWAYML_API_SECRET=RUNWAY_SECRET + bad, RUNWAYML_BASE_URL=self.runway.base_url,
            FAL_KEY=FAL_KEY + bad, FAL_QUEUE_URL=self.fal.base_url,
            COMFYUI_URL=self.comfy.base_url, COMFYUI_AUTH_HEADER=f"{COMFY_HEADER[0]}: {COMFY_HEADER[1]}{bad}",
            SLACK_BOT_TOKEN=BOT_TOKEN + bad, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=self.slack.api_url,
            DISCORD_TOKEN=DISCORD_TOKEN + bad, DISCORD_API_BASE_URL=self.discord.api_base,
            VIDEOBOT_WEB_PORT="8080", VIDEOBOT_WEB_SECRET="s" * 40, **extra,
        )  # fmt: skip


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    s = Services(tmp_path / "emulators")
    for server in (s.openai, s.runway, s.fal, s.comfy, s.slack, s.discord):
        await server.start()
    yield s
    for server in (s.discord, s.slack, s.comfy, s.fal, s.runway, s.openai):
        await server.stop()


def doctor(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "bot", "doctor"], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def rows(out: str) -> dict[str, str]:
    """check name -> result, from the report's lines."""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        for status in ("ok", "FAIL", "warn", "skip"):
            if status in parts:
                index = parts.index(status)
                found[" ".join(parts[:index])] = status
                break
    return found


async def test_good_keys_pass_every_check(services: Services, tmp_path: Path) -> None:
    done = await _run(services, tmp_path, good=True)
    assert done.returncode == 0, done.stdout + done.stderr
    result = rows(done.stdout)
    for name in (*SERVICES, "settings", "database", "media directory", "gallery secret", "pipelines"):
        assert result.get(name) == "ok", f"{name}: {result.get(name)}\n{done.stdout}"
    assert "All needed checks passed." in done.stdout
    # One cheap authenticated request per service reached each emulator.
    assert [c.path for c in services.openai.calls("models")] == ["/v1/models"]
    assert services.runway.calls("GET", "/v1/organization")
    assert services.slack.calls_to("auth.test")
    assert any(c.path == "/users/@me" for c in services.discord.calls)


async def test_bad_keys_fail_each_service_and_say_what_to_fix(services: Services, tmp_path: Path) -> None:
    done = await _run(services, tmp_path, good=False)
    assert done.returncode == 1, done.stdout + done.stderr
    result = rows(done.stdout)
    for name in SERVICES:
        assert result.get(name) == "FAIL", f"{name}: {result.get(name)}\n{done.stdout}"
    for variable in ("OPENAI_API_KEY", "RUNWAYML_API_SECRET", "FAL_KEY", "COMFYUI_AUTH_HEADER", "DISCORD_TOKEN", "SLACK_BOT_TOKEN"):
        assert f"check {variable}" in done.stdout or variable in done.stdout, variable
    assert result["database"] == "ok" and "6 problems to fix." in done.stdout
    for secret in ("sk-doctor-goodx", RUNWAY_SECRET, FAL_KEY, BOT_TOKEN, DISCORD_TOKEN, "comfy-test-secret", SIGNING_SECRET):
        assert secret not in done.stdout + done.stderr, f"{secret} printed"


async def test_unreachable_database_and_bad_setting_fail(services: Services, tmp_path: Path) -> None:
    env = services.env(good=True, VIDEOBOT_DATABASE_URL="postgresql://videobot:pw-doctor@127.0.0.1:1/videobot")
    done = await _run_env(env, tmp_path)
    assert done.returncode == 1 and rows(done.stdout)["database"] == "FAIL"
    assert "VIDEOBOT_DATABASE_URL" in done.stdout and "pw-doctor" not in done.stdout
    env = services.env(good=True, VIDEOBOT_MAX_CONCURRENT_JOBS="many")
    done = await _run_env(env, tmp_path)
    assert done.returncode == 1 and rows(done.stdout)["settings"] == "FAIL"
    assert "VIDEOBOT_MAX_CONCURRENT_JOBS" in done.stdout


async def _run(services: Services, tmp_path: Path, *, good: bool) -> subprocess.CompletedProcess[str]:
    return await _run_env(services.env(good=good), tmp_path)


async def _run_env(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    import asyncio

    # In a thread: the emulators answer on this test's event loop meanwhile.
    return await asyncio.to_thread(doctor, env, tmp_path / "work")
