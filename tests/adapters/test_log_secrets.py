"""Logs never carry a token, a key or a personal link: end-to-end flows on Slack, Discord and the web
gallery (a /gallery link used, jobs posted, posts and private answers that fail) run with every
logger at DEBUG, and the captured log is searched for every secret the test configured or was issued."""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from typing import Any

import pytest

from bot.core.models import JobStatus
from bot.web.server import WebServer
from tests.fakes.discord_api import DiscordEmulator, discord_env, emu, job_of, start_bot  # noqa: F401 (emu is a fixture)
from tests.fakes.openai_server import OpenAIEmulator
from tests.fakes.slack_api import BOT_TOKEN, SIGNING_SECRET, SlackEmulator, slack, slack_env, start_slack_bot  # noqa: F401
from tests.web.web_support import PUBLIC_URL, WEB_SECRET, Served, Visitor

pytestmark = pytest.mark.timeout(90)
DISCORD_TOKEN = "test-bot-token-5f2c9a7e41d3"
LINK = re.compile(re.escape(PUBLIC_URL) + r"/g/([\w.-]+)")
MANAGE_GUILD = 1 << 5


def everything(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, openai_server: OpenAIEmulator) -> dict[str, str]:
    """Every logger at DEBUG (the app sets the root's level from VIDEOBOT_LOG_LEVEL), and the
    settings whose values are secrets: moderation through the OpenAI emulator with its key."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("VIDEOBOT_LOG_LEVEL", "DEBUG")
    env = {
        "VIDEOBOT_PUBLIC_URL": PUBLIC_URL, "VIDEOBOT_WEB_SECRET": WEB_SECRET, "VIDEOBOT_DEFAULT_PIPELINE": "local",
        "OPENAI_API_KEY": openai_server.api_key, "OPENAI_BASE_URL": openai_server.base_url,
    }  # fmt: skip
    return env


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """The captured log as a handler would write it: messages, arguments and tracebacks."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


def assert_none_logged(caplog: pytest.LogCaptureFixture, secrets: Iterable[str]) -> None:
    text = logged(caplog)
    assert len(caplog.records) > 50 and "DEBUG" in text, "the scan needs the debug log to mean anything"
    for secret in secrets:
        assert secret, "an empty secret would match anything"
        for where in (m.start() for m in re.finditer(re.escape(secret), text)):
            line = text[text.rfind("\n", 0, where) + 1 : text.find("\n", where)]
            raise AssertionError(f"a secret is in the log: {line[:300]!r}")


async def web_visit(app: Any, token: str) -> str:
    """Open the personal link as a browser would; the session cookie it got."""
    server = WebServer(app, host="127.0.0.1", port=0)
    await server.start()
    visitor = Visitor(Served(app, server._runner, f"http://127.0.0.1:{server.port}"))  # type: ignore[arg-type]
    try:
        assert (await visitor.open_link(f"/g/{token}")).status == 303
        await visitor.text("/")
        cookies = [c.value for c in visitor.session.cookie_jar]
        assert cookies
        return cookies[0]
    finally:
        await visitor.close()
        await server.stop()


async def test_slack_and_web_logs_hold_no_secret(
    settings: Any, slack: SlackEmulator, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    slack_env(monkeypatch, slack, **everything(caplog, monkeypatch, openai_server))
    bot = await start_slack_bot()
    try:
        await slack.slash(bot.url, "/video", "gallery", user_id="U0ALICE")
        [answer] = await slack.wait_for(lambda: [r for r in slack.responses if r["key"] == "cmd-U0ALICE"])
        link = LINK.search(str(answer["text"]))
        assert link is not None
        session = await web_visit(bot.app, link.group(1))

        # The same answer refused by Slack's hook (the bot logs that it failed, not what it said).
        slack.fail_next("response_url", 500)
        await slack.slash(bot.url, "/video", "gallery", user_id="U0BOB")
        await slack.wait_for(lambda: [c for c in slack.calls if c.method == "response_url" and c.status == 500])

        # A job whose status post Slack refuses (it is cancelled, the user told), then one posted
        # and delivered with its gallery link.
        slack.fail_next("chat.postMessage", 500)
        await slack.slash(bot.url, "/video", "a kite in the rain --seconds 1 --size 128x72", user_id="U0ALICE")
        await slack.wait_for(lambda: [r for r in slack.responses if "Slack refused my message" in str(r.get("text"))])
        await slack.slash(bot.url, "/video", "a kite over the dunes --seconds 1 --size 128x72", user_id="U0ALICE")
        [post] = await slack.wait_for(lambda: [m for m in slack.messages.values() if m.get("files") and "Open in gallery" in m["text"]])
        job = next(j for j in await bot.app.store.list(limit=10) if j.prompt == "a kite over the dunes")
        assert (await asyncio.wait_for(bot.app.runner.wait(job.id), 20)).status is JobStatus.COMPLETED
    finally:
        await bot.close()
    assert "Slack refused" in logged(caplog) or "status message not posted" in logged(caplog)
    assert_none_logged(caplog, [BOT_TOKEN, SIGNING_SECRET, WEB_SECRET, openai_server.api_key, link.group(1), session])


async def test_discord_and_web_logs_hold_no_secret(
    settings: Any, emu: DiscordEmulator, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    discord_env(monkeypatch, emu, DISCORD_TOKEN=DISCORD_TOKEN, **everything(caplog, monkeypatch, openai_server))
    bot = await start_bot()
    try:
        interaction = await emu.slash("gallery", permissions=MANAGE_GUILD)
        await asyncio.wait_for(interaction.answered.wait(), 3)
        link = LINK.search(str(interaction.callback["data"]["content"]))  # type: ignore[index]
        assert link is not None
        session = await web_visit(bot.app, link.group(1))

        # The answer refused by Discord (the bot logs that it failed, not what it said).
        emu.fail_next("POST", r"/interactions/.*/callback", status=400)
        await emu.slash("gallery", permissions=MANAGE_GUILD)
        await emu.wait_for(lambda: [c for c in emu.calls if c.path.endswith("/callback") and c.status == 400], timeout=5)

        # A job posted, its result with the gallery link; then a DM the user refuses.
        started = await emu.slash("video", {"prompt": "a kite over the dunes", "seconds": 1, "size": "128x72"})
        job = await asyncio.wait_for(bot.app.runner.wait((await job_of(bot, started)).id), 20)
        assert job.status is JobStatus.COMPLETED
        emu.fail_next("POST", r"/users/@me/channels", status=403)
        await bot.adapter.surface.tell(job.origin.user_id, f"your link: {link.group(0)}")
    finally:
        await bot.close()
    # The failures were logged (by kind, with their tracebacks), and nothing secret with them.
    assert "could not DM 1001" in logged(caplog) and any(r.levelno >= logging.ERROR and r.exc_info for r in caplog.records)
    assert_none_logged(caplog, [DISCORD_TOKEN, WEB_SECRET, openai_server.api_key, link.group(1), session])
