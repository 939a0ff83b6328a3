"""Reactions on a job's messages, through the core's meaning (`bot.core.actions.reaction_action`):
🔁 re-roll, ❌ cancel (running) or delete (finished), ✉️ the file by DM, 🎬 animate an image.

Raw events, so it works on messages the client never cached (e.g. after a restart); the job
is found through the store by message id, or, for a message the bot posted whose id is not
stored yet (the moment between a post and the write of its id), by the job id the message
carries (its buttons, its file name, its text).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord

from bot.adapters.discord_bot import marks
from bot.adapters.discord_bot.flows import actor_for, after_reaction, reaction_origin
from bot.adapters.discord_bot.render import plain
from bot.core.actions import perform, reaction_action, reaction_take
from bot.core.models import JobKind
from bot.core.views import Action
from bot.core.errors import JobNotFound, user_message
from bot.core.models import Job

if TYPE_CHECKING:
    from bot.adapters.discord_bot.host import DiscordHost

log = logging.getLogger(__name__)


def register(client: discord.Client, adapter: DiscordHost) -> None:
    async def on_raw_reaction_add(payload: discord.RawReactionActionEvent) -> None:
        await on_reaction(adapter, payload)

    client.event(on_raw_reaction_add)


async def on_reaction(adapter: DiscordHost, payload: discord.RawReactionActionEvent) -> None:
    client = adapter.client
    if client.user is not None and payload.user_id == client.user.id:
        return
    emoji = payload.emoji.name or "" if payload.emoji.id is None else ""
    take = reaction_take(emoji)
    action = Action.USE if take is not None else reaction_action(emoji)
    if action is None:
        return
    job = await find_job(adapter, payload)
    if job is None or (take is not None and job.kind is not JobKind.TAKES):
        return
    origin = reaction_origin(payload, adapter.client)
    try:
        actor = actor_for(origin, _permissions(adapter, payload))
        outcome = await perform(adapter.service, action, job.id, actor=actor, origin=origin, take=take)
        await after_reaction(adapter, outcome, payload.user_id)
    except Exception as exc:
        # No interaction to answer ephemerally: the reacting user gets the reason privately.
        await adapter.surface.tell(payload.user_id, plain(user_message(exc)))


def _permissions(adapter: DiscordHost, payload: discord.RawReactionActionEvent) -> discord.Permissions | None:
    """The reacting member's permissions in that channel, when the guild is known."""
    guild = adapter.client.get_guild(payload.guild_id) if payload.guild_id else None
    channel = guild.get_channel_or_thread(payload.channel_id) if guild is not None else None
    if channel is None or not isinstance(payload.member, discord.Member):
        return None
    return channel.permissions_for(payload.member)


async def find_job(adapter: DiscordHost, payload: discord.RawReactionActionEvent) -> Job | None:
    """The job behind the reacted message: by stored message id, else by the job id in it."""
    service = adapter.service
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
        job = await service.get_for(job_id, reaction_origin(payload, adapter.client))
    except JobNotFound:
        return None
    same_place = job.origin.platform == adapter.platform and job.origin.channel_id == str(payload.channel_id)
    return job if same_place else None
