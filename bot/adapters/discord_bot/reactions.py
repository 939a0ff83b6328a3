"""Reactions on a job's messages: 🔁 re-roll, ❌ cancel or delete (owner only), ✉️ file by DM.

Raw events, so it works on messages the client never cached (e.g. after a restart);
the job is found through the store by message id, or, for a message the bot posted whose id
is not stored yet (the moment between a post and the write of its id), by the job id the
message carries (its buttons, its file name, its text).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord

from bot.adapters.discord_bot import marks
from bot.adapters.discord_bot.surface import STATUS_REPLY_TO
from bot.core.errors import JobNotFound, user_message
from bot.core.models import Actor, Job, Origin

if TYPE_CHECKING:
    from bot.adapters.discord_bot.client import DiscordAdapter

log = logging.getLogger(__name__)

REROLL, CANCEL, MAIL = "🔁", "❌", "✉️"
HANDLED = {REROLL, CANCEL, MAIL, "✉"}  # ✉ without the variation selector is the same key


async def on_raw_reaction_add(adapter: DiscordAdapter, payload: discord.RawReactionActionEvent) -> None:
    client = adapter.client
    if client.user is not None and payload.user_id == client.user.id:
        return
    emoji = payload.emoji.name or ""
    if payload.emoji.id is not None or emoji not in HANDLED:
        return
    job = await find_job(adapter, payload)
    if job is None:
        return
    user_id = str(payload.user_id)
    try:
        if emoji == REROLL:
            await _reroll(adapter, job, payload)
        elif emoji == CANCEL:
            await _cancel_or_delete(adapter, job, payload)
        else:
            await send_file_by_dm(adapter, job, user_id)
    except Exception as exc:
        # No interaction to answer ephemerally: the reacting user gets the reason privately.
        await _dm_text(adapter, user_id, user_message(exc))


async def find_job(adapter: DiscordAdapter, payload: discord.RawReactionActionEvent) -> Job | None:
    """The job behind the reacted message: by stored message id, else by the job id in it."""
    service = adapter.app.service
    job = await service.find_by_message(adapter.platform, str(payload.message_id))
    if job is not None:
        return job
    author = payload.message_author_id
    if author is not None and author != adapter.bot_user_id:
        return None  # not ours: no fetch for reactions on users' messages
    try:
        channel = adapter.client.get_partial_messageable(payload.channel_id)
        message = await channel.fetch_message(payload.message_id)
    except discord.HTTPException:
        return None
    job_id = marks.job_id_of(message) if message.author.id == adapter.bot_user_id else None
    if job_id is None:
        return None
    try:
        job = await service.get(job_id)
    except JobNotFound:
        return None
    same_place = job.origin.platform == adapter.platform and job.origin.channel_id == str(payload.channel_id)
    return job if same_place else None


async def _reroll(adapter: DiscordAdapter, job: Job, payload: discord.RawReactionActionEvent) -> None:
    # The child's status message is posted after the child exists, so the intent to post it
    # (and what it answers) is stored with the child first: if this process dies before the
    # post or before its id is written, whichever process drives the child posts it (once,
    # by nonce and by a look at the channel), instead of the child running with no status.
    origin = Origin(
        platform=adapter.platform,
        workspace_id=str(payload.guild_id) if payload.guild_id else None,
        channel_id=str(payload.channel_id),
        user_id=str(payload.user_id),
        user_name=payload.member.display_name if payload.member else None,
        extra={STATUS_REPLY_TO: str(payload.message_id)},
    )
    child = await adapter.app.service.reroll(job.id, origin)
    try:
        await adapter.surface.ensure_status(child)
    except discord.HTTPException:
        # The re-roll runs anyway; its result is posted (or its failure reported) at the end.
        log.warning("could not post the status message of re-roll %s", child.id, exc_info=True)


async def _cancel_or_delete(adapter: DiscordAdapter, job: Job, payload: discord.RawReactionActionEvent) -> None:
    actor = Actor(user_id=str(payload.user_id))  # owner only (and the bot's admins, as the service says)
    service = adapter.app.service
    if not job.terminal:
        await service.cancel(job.id, actor)
        return
    await service.delete(job.id, actor)
    if job.origin.result_message_id:
        channel = adapter.client.get_partial_messageable(payload.channel_id)
        await channel.get_partial_message(int(job.origin.result_message_id)).edit(
            content=f"🗑️ Job {job.id} was deleted by its owner.", attachments=[], view=None
        )


async def send_file_by_dm(adapter: DiscordAdapter, job: Job, user_id: str) -> None:
    channel = await _dm_channel(adapter, user_id)
    file, note = await adapter.surface.prepare_file(job, adapter.upload_limit(None))
    text = f"**Job {job.id}**\n> {job.prompt[:300]}" + (f"\n{note}" if note else "")
    await channel.send(text, file=file) if file is not None else await channel.send(text)


async def _dm_channel(adapter: DiscordAdapter, user_id: str) -> discord.PartialMessageable:
    data = await adapter.client.http.start_private_message(int(user_id))
    return adapter.client.get_partial_messageable(int(data["id"]), type=discord.ChannelType.private)


async def _dm_text(adapter: DiscordAdapter, user_id: str, text: str) -> None:
    try:
        await (await _dm_channel(adapter, user_id)).send(text)
    except discord.HTTPException:
        log.warning("could not DM %s: %s", user_id, text)
