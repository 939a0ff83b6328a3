"""The console adapter in process: the core's StatusView line, its buttons as typed commands, and
a failure said in full (every command, button and gesture: tests/adapters/test_scenarios.py).

(`videobot run` with piped stdin and `</dev/null` is exercised as a real process in test_cli.py
and test_crash_e2e.py.)
"""
from __future__ import annotations

import asyncio
import io
import re

import pytest

from bot.adapters.console import ConsoleAdapter
from bot.app import App
from bot.core.views import status_view
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline

pytestmark = pytest.mark.timeout(60)


async def test_console_speaks_every_command_and_prints_the_status_view_line(app: App) -> None:
    out = io.StringIO()
    console = ConsoleAdapter(app, stdin=io.StringIO(""), stdout=out)
    app.runner.deliverers[console.platform] = console.deliver
    await console.start()
    await console.wait_closed()  # empty input: the reader is done; commands below are typed directly

    async def say(line: str) -> str:
        start = len(out.getvalue())
        await console.handle_line(line)
        return out.getvalue()[start:]

    async def job_of(reply: str) -> str:
        match = re.search(r"job ([a-z0-9]{8})", reply)
        assert match, reply
        done = await asyncio.wait_for(app.runner.wait(match.group(1)), 20)
        await app.bus.drain()
        return done.id

    helped = await say("/help")
    assert "/video PROMPT" in helped and "This bot offers:" in helped and "local (default)" in helped

    parent = await job_of(await say('/video "a sign that says --stop-- here" --seconds 1 --size 128x72'))
    stored = await app.service.get(parent)
    assert stored.prompt == "a sign that says --stop-- here"
    text = out.getvalue()
    assert f"[{parent}] ⏳ Queued" in text and f"[{parent}] {status_view(stored).line}" in text and f"[{parent}] video: " in text

    # The buttons a terminal cannot have, as the commands that do the same.
    assert f"[{parent}] next: /reroll {parent} · /remix {parent} PROMPT · /extend {parent} [--seconds N] [PROMPT] · /delete {parent}" in text
    assert "nothing to cancel" in await say(f"/cancel {parent}")
    assert "deleted" in await say(f"/delete {parent}")
    assert "error: Unknown command /frobnicate" in await say("/frobnicate")

    # A failure after the start: the console is the owner's screen, so the whole note is shown.
    server = ScriptedServer(fail_job=("moderation_blocked", "The scene shows a logo. Describe it without the brand, then try again."))
    app.registry.register("scripted", lambda: scripted_pipeline(server))
    failed = await job_of(await say("/video a branded scene --pipeline scripted --seconds 1 --size 128x72"))
    assert f"[{failed}] ❌ The provider could not make this video [moderation_blocked]: The scene shows a logo. Describe it" in out.getvalue()
    await app.runner.idle()
    await app.bus.drain()
    await console.stop()
