"""The steps every job-starting interaction shares: defer, status message, submit, errors."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord

from bot.core.errors import user_message
from bot.core.models import Job, Origin

if TYPE_CHECKING:
    from bot.adapters.discord_bot.client import DiscordAdapter

log = logging.getLogger(__name__)

StartJob = Callable[[Origin], Awaitable[Job]]


def adapter_of(interaction: discord.Interaction) -> DiscordAdapter:
    return interaction.client.adapter  # type: ignore[attr-defined,no-any-return]


async def reply_error(interaction: discord.Interaction, exc: BaseException) -> None:
    """Ephemeral, short, and says what to do (the text comes from bot.core.errors)."""
    text = user_message(exc)
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the user about an error: %s", text, exc_info=True)


async def start_job(interaction: discord.Interaction, start: StartJob) -> Job | None:
    """Defer at once (Discord's 3 s), make the original response the status message, then submit.

    The status message id goes into the job's origin at creation, so every event can be
    rendered (and found again after a restart) without a second write.
    """
    adapter = adapter_of(interaction)
    callback = await interaction.response.defer(thinking=True)
    message_id = callback.message_id if callback is not None else None
    if message_id is None:
        message_id = (await interaction.original_response()).id
    adapter.surface.register_interaction(message_id, interaction)
    origin = adapter.origin_for(interaction, status_message_id=message_id)
    try:
        job = await start(origin)
    except Exception as exc:
        adapter.surface.forget_interaction(message_id)
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            pass
        await reply_error(interaction, exc)
        return None
    return job
