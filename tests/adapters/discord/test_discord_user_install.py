"""Discord user installs: the app used through a user's own install in a server where the bot is
not a member. Commands are declared for both kinds of install and every context; such a job is the
user's own tenant (like a DM), answered and delivered through the interaction (deferred response,
edits of it, a follow-up with the file), never with the bot token there; a result ready after the
interaction token is gone goes to the user by DM with a note."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bot.adapters.discord_bot.flows import GUEST_IN
from bot.core.models import JobStatus
from tests.fakes.discord_api import DiscordEmulator, discord_env, emu, followup_with_file, start_bot  # noqa: F401 (emu is a fixture)
from tests.fakes.scripted_provider import ScriptedServer
from tests.adapters.discord.test_discord_delivery import job_for, with_scripted

pytestmark = pytest.mark.timeout(60)

ASK = {"prompt": "a kite over dunes", "seconds": 1, "size": "128x72", "pipeline": "scripted"}


def bot_calls_into(emu: DiscordEmulator, channel_id: str) -> list[Any]:
    return [c for c in emu.calls if f"/channels/{channel_id}" in c.path]


async def test_commands_are_declared_for_user_installs_in_every_context(settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    discord_env(monkeypatch, emu)
    bot = await start_bot()
    try:
        await emu.wait_for(lambda: emu.commands.get("global"))
        for command in emu.commands["global"]:
            assert sorted(command["integration_types"]) == [0, 1], command["name"]  # guild install, user install
            assert sorted(command["contexts"]) == [0, 1, 2], command["name"]  # servers, bot DMs, group DMs
    finally:
        await bot.close()


async def test_a_user_install_where_the_bot_is_not_a_member_is_answered_and_delivered_through_the_interaction(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    discord_env(monkeypatch, emu)
    server = ScriptedServer()
    server.release.clear()
    bot = await start_bot(register=with_scripted(server))
    try:
        interaction = await emu.slash("video", ASK, user_id="2002", guest=True)
        job = await job_for(bot, interaction)
        assert interaction.callback is not None and interaction.callback["type"] == 5  # deferred at once
        # The user's own tenant, like a DM: not the server's (the bot is not in it).
        assert job.origin.workspace_id is None and job.origin.direct and job.origin.extra[GUEST_IN] == emu.guest_guild_id
        await emu.wait_for(lambda: emu.calls_to("PATCH", rf"/webhooks/{emu.application_id}/{interaction.token}/messages/@original$"))
        server.release.set()
        done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
        assert done.status is JobStatus.COMPLETED and done.error_code is None, done.error_message
        await emu.wait_for(lambda: "✅ Done" in emu.messages[interaction.original_id]["content"])
        result = followup_with_file(emu, interaction.token)
        assert result is not None and result["attachments"][0]["filename"] == f"{job.id}.mp4"
        assert done.origin.result_message_id == result["id"]
        assert not bot_calls_into(emu, emu.guest_channel_id), "the bot token was used where the bot is not a member"
    finally:
        await bot.close()


async def test_a_user_install_result_after_the_token_expired_goes_to_the_users_dm(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tokens "live" 1.5 s here; the bot stops using them 899 s before the real 900 s, i.e. after 1 s.
    emu.token_ttl = 1.5
    discord_env(monkeypatch, emu, DISCORD_TOKEN_MARGIN_SECONDS="899")
    server = ScriptedServer()
    server.release.clear()
    bot = await start_bot(register=with_scripted(server))
    try:
        interaction = await emu.slash("video", ASK, user_id="2003", guest=True)
        job = await job_for(bot, interaction)
        await emu.wait_for(lambda: emu.calls_to("PATCH", r"/@original$"))
        await asyncio.sleep(max(0.0, interaction.created + 1.7 - time.time()))  # past the token's life
        server.release.set()
        done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
        assert done.status is JobStatus.COMPLETED and done.error_code is None, done.error_message
        dm = emu.dm_channels["2003"]
        result = emu.messages[str(done.origin.result_message_id)]
        assert result["channel_id"] == dm and result["attachments"][0]["filename"] == f"{job.id}.mp4"
        assert "15-minute window" in result["content"]
        assert followup_with_file(emu, interaction.token) is None
        assert not [c for c in emu.calls if c.status == 401], "a call with an expired interaction token"
        assert not bot_calls_into(emu, emu.guest_channel_id), "the bot token was used where the bot is not a member"
    finally:
        await bot.close()
