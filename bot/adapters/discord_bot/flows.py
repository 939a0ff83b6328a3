"""What every command, button, modal and reaction shares: who acts, where a new job comes
from (the one origin builder), errors, and starting a job with its status message.

Listener modules (commands, buttons, reactions) call these; nothing here imports the
adapter module (its type is for the checker only).
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord

from bot.adapters.discord_bot.render import plain, status_content
from bot.core.actions import Outcome, perform
from bot.core.commands import Command
from bot.core.dispatch import run_command
from bot.core.errors import NeedsConfirmation, user_message
from bot.core.models import PLACE, Actor, Job, Origin

from bot.core.views import Action, status_view
from bot.observability.hooks import acked_since

if TYPE_CHECKING:
    from bot.adapters.discord_bot.host import DiscordHost

log = logging.getLogger(__name__)

PLATFORM = "discord"
#: Discord's interaction tokens live this long.
TOKEN_LIFETIME = 15 * 60
#: origin.extra key of a job that starts without a status message (a reaction): the message the
#: status message will answer. Stored with the job before anything is posted, so whichever
#: process drives the job knows a status message is due and where.
STATUS_REPLY_TO = "status_reply_to"
#: origin.extra key of a job asked through the user's own install of the app in a server where the
#: bot is not a member (value: that server's id). The bot cannot post there: everything goes
#: through the interaction, and once its token is gone, to the user by DM.
GUEST_IN = "guest_in"

StartJob = Callable[[Origin], Awaitable[Job]]


class AcksFirst:
    """Answering Discord comes before work: while interactions wait for their defer, the work
    that can wait (submitting new jobs, status edits) waits, briefly. Under a burst of commands
    every one of them is acknowledged before the first submission takes the loop.

    The cyclic garbage collector waits too. A burst allocates fast (every interaction, its
    task, its request), so CPython's young-generation collections fire dozens of times inside
    it and walk the burst's live objects each time: measured at 15-30 ms of a 200-command
    burst. Automatic collection is paused from the first pending ack until acks have been clear
    for `GC_GRACE` (gateway frames arrive in batches: the next batch is usually close behind),
    and never longer than `GC_MAX_PAUSE`; reference counting still frees everything acyclic.
    """

    #: Work never waits longer than this for acks (a steady stream of commands cannot starve it).
    MAX_WAIT = 0.5
    #: Collection resumes once no ack has been pending for this long...
    GC_GRACE = 0.05
    #: ...or after this long in any case (a steady stream of commands cannot grow the heap unchecked).
    GC_MAX_PAUSE = 1.0

    def __init__(self) -> None:
        self.pending = 0
        self._clear = asyncio.Event()
        self._clear.set()
        self._gc_paused_at: float | None = None
        self._gc_resume: asyncio.TimerHandle | None = None
        self._gc_grace = False

    def enter(self) -> None:
        self.pending += 1
        self._clear.clear()
        self._pause_gc()

    def leave(self) -> None:
        self.pending -= 1
        if self.pending <= 0:
            self.pending = 0
            self._clear.set()
            self._schedule_gc_resume(self.GC_GRACE)

    async def wait(self) -> None:
        if self._clear.is_set():
            return
        # asyncio.timeout, not wait_for: no task per waiter (hundreds wait during a burst).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.MAX_WAIT):
                await self._clear.wait()

    # --- the collector's pause ----------------------------------------------------------------

    def _pause_gc(self) -> None:
        if self._gc_paused_at is None:
            if not gc.isenabled():
                return  # someone else (a test, a profiler) owns the collector: leave it alone
            gc.disable()
            self._gc_paused_at = time.monotonic()
            self._schedule_gc_resume(self.GC_MAX_PAUSE)
        elif self._gc_grace:
            self._schedule_gc_resume(self.GC_MAX_PAUSE)  # acks are pending again: no grace yet

    def _schedule_gc_resume(self, delay: float) -> None:
        if self._gc_paused_at is None:
            return
        self._gc_grace = delay == self.GC_GRACE
        if self._gc_resume is not None:
            self._gc_resume.cancel()
        left = self.GC_MAX_PAUSE - (time.monotonic() - self._gc_paused_at)
        self._gc_resume = asyncio.get_running_loop().call_later(max(0.0, min(delay, left)), self._resume_gc)

    def _resume_gc(self) -> None:
        self._gc_resume = None
        if self._gc_paused_at is None:
            return
        if self.pending and time.monotonic() - self._gc_paused_at < self.GC_MAX_PAUSE:
            self._schedule_gc_resume(self.GC_MAX_PAUSE)
            return
        self._gc_paused_at = None
        gc.enable()

    def close(self) -> None:
        """Give the collector back (the adapter stops)."""
        if self._gc_resume is not None:
            self._gc_resume.cancel()
            self._gc_resume = None
        if self._gc_paused_at is not None:
            self._gc_paused_at = None
            gc.enable()


def adapter_of(interaction: discord.Interaction) -> DiscordHost:
    return interaction.client.adapter  # type: ignore[attr-defined,no-any-return]


# --- who and where ------------------------------------------------------------------------


def origin_for(
    *,
    user: discord.abc.User | None,
    user_id: int,
    guild_id: int | None,
    channel_id: int | None,
    interaction: discord.Interaction | None = None,
    status_message_id: int | None = None,
    reply_to: int | None = None,
    channel: object | None = None,
) -> Origin:
    """The one origin builder: a command or click (`interaction`, its response is the status
    message) or a reaction (`reply_to`: a status message is due, answering that message)."""
    extra: dict[str, object] = {}
    if interaction is not None:
        extra = {
            "application_id": str(interaction.application_id),
            # When the interaction token dies; after it, the bot token takes over.
            "interaction_expires_at": interaction.created_at.timestamp() + TOKEN_LIFETIME,
            "filesize_limit": interaction.filesize_limit,
            # What the bot itself may do in this channel (results go out with the bot token when it can post).
            "app_permissions": interaction.app_permissions.value,
        }
    if reply_to is not None:
        extra[STATUS_REPLY_TO] = str(reply_to)
    if interaction is not None and guest(interaction):
        # The user's own tenant, like a DM: budgets, settings and the gallery are theirs, not the server's.
        extra[GUEST_IN] = str(guild_id)
        extra[PLACE] = "direct"
        guild_id = None
    elif isinstance(user, discord.Member):
        # For the roles a server's admins may require (`/settings set roles ...`).
        extra["roles"] = [str(role.id) for role in user.roles]
    place = place_of(guild_id, channel if channel is not None else (interaction.channel if interaction is not None else None))
    if place != "public":
        extra[PLACE] = place
    return Origin(
        platform=PLATFORM,
        workspace_id=str(guild_id) if guild_id else None,
        channel_id=str(channel_id) if channel_id else None,
        user_id=str(user_id),
        user_name=user.display_name if user is not None else None,
        status_message_id=str(status_message_id) if status_message_id else None,
        extra=extra,
    )


def guest(interaction: discord.Interaction) -> bool:
    """In a server through the user's install alone: the app is not installed there, so the bot is not a member."""
    return interaction.guild_id is not None and not interaction.is_guild_integration()


def is_guest(job: Job) -> bool:
    return bool(job.origin.extra.get(GUEST_IN))


def place_of(guild_id: int | None, channel: object | None) -> str:
    """A DM is "direct" (its own tenant); a private thread, or a channel (or a thread's parent)
    that @everyone cannot view, is "private"; anything else "public". A channel not in the
    cache counts as private: better to hide a public job than to show a private one."""
    if guild_id is None:
        return "direct"
    if isinstance(channel, discord.Thread):
        if channel.type is discord.ChannelType.private_thread:
            return "private"
        channel = channel.parent
    if isinstance(channel, discord.abc.GuildChannel):
        return "public" if channel.permissions_for(channel.guild.default_role).view_channel else "private"
    return "private"


def interaction_origin(interaction: discord.Interaction, *, status_message_id: int | None = None) -> Origin:
    return origin_for(
        user=interaction.user, user_id=interaction.user.id, guild_id=interaction.guild_id, channel_id=interaction.channel_id,
        interaction=interaction, status_message_id=status_message_id,
    )  # fmt: skip


def reaction_origin(payload: discord.RawReactionActionEvent, client: discord.Client | None = None) -> Origin:
    guild = client.get_guild(payload.guild_id) if client is not None and payload.guild_id else None
    return origin_for(
        user=payload.member, user_id=payload.user_id, guild_id=payload.guild_id, channel_id=payload.channel_id,
        reply_to=payload.message_id, channel=guild.get_channel_or_thread(payload.channel_id) if guild is not None else None,
    )  # fmt: skip


def actor_for(origin: Origin, permissions: discord.Permissions | None) -> Actor:
    """Who acts, in their guild. Admins of a guild are members with Administrator or Manage Server:
    guild-level permissions a channel's overwrites cannot grant (Manage Messages can be, so it does
    not count). The service adds VIDEOBOT_ADMIN_USER_IDS, and judges admins only at home; in a DM
    nobody is an admin."""
    admin = permissions is not None and (permissions.administrator or permissions.manage_guild)
    return Actor.of(origin, is_admin=bool(admin))


def interaction_actor(interaction: discord.Interaction) -> Actor:
    return actor_for(interaction_origin(interaction), interaction.permissions)


# --- answers ------------------------------------------------------------------------------


async def reply(interaction: discord.Interaction, text: str) -> None:
    """Ephemeral: only the user who asked sees it."""
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def reply_error(interaction: discord.Interaction, exc: BaseException) -> None:
    """Ephemeral, short, and says what to do (the text comes from bot.core.errors)."""
    text = plain(user_message(exc))
    try:
        await reply(interaction, text)
    except discord.HTTPException as failed:
        # The error's kind, never its text (it may quote the user, or hold a link).
        log.warning(
            "could not tell user %s about an error (%s): discord %s code %s", interaction.user.id, type(exc).__name__, failed.status, failed.code
        )


# --- starting jobs and acting on them -------------------------------------------------------


async def start_job(interaction: discord.Interaction, start: StartJob) -> Job | None:
    """Defer at once (Discord's 3 s), make the original response the status message, then start.

    The status message id goes into the job's origin at creation, so every event can be
    rendered (and found again after a restart) without a second write.
    """
    adapter = adapter_of(interaction)
    adapter.acks.enter()
    try:
        callback = await interaction.response.defer(thinking=True)
    finally:
        adapter.acks.leave()
    acked_since("discord", interaction.created_at.timestamp())
    message_id = callback.message_id if callback is not None else None
    if message_id is None:
        message_id = (await interaction.original_response()).id
    adapter.surface.register_interaction(message_id, interaction)
    await adapter.acks.wait()
    try:
        job = await start(interaction_origin(interaction, status_message_id=message_id))
    except NeedsConfirmation as offer:
        # The job waits for its owner: the response shows the offer, and becomes the job's
        # status message if it is confirmed (the waiting job's origin already points at it).
        await interaction.edit_original_response(content=plain(user_message(offer)), view=adapter.surface.offer_view(offer.token))
        return None
    except Exception as exc:
        adapter.surface.forget_interaction(message_id)
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            pass
        await reply_error(interaction, exc)
        return None
    await adapter.surface.announce(job)
    return job


async def start_action(
    interaction: discord.Interaction, action: Action, job_id: str, *, prompt: str | None = None, seconds: int | None = None,
    take: int | None = None,
) -> Job | None:
    """A button or modal that makes a new job (re-roll, remix, extend, animate, more like a take)."""
    adapter = adapter_of(interaction)
    actor = interaction_actor(interaction)

    async def start(origin: Origin) -> Job:
        outcome = await perform(adapter.service, action, job_id, actor=actor, origin=origin, prompt=prompt, seconds=seconds, take=take)
        return outcome.job

    return await start_job(interaction, start)


async def on_button(interaction: discord.Interaction, action: Action, job_id: str, *, take: int | None = None) -> None:
    """A click on a job's button: what the core says the action means, shown where it belongs."""
    if action.starts_job or action is Action.USE:  # a click's response becomes the new (or used) job's status message
        await start_action(interaction, action, job_id, take=take)
        return
    adapter = adapter_of(interaction)
    outcome = await perform(
        adapter.service, action, job_id, actor=interaction_actor(interaction), origin=interaction_origin(interaction), take=take
    )  # fmt: skip
    if outcome.job.deleted_at is not None:
        # The clicked message shows it at once; the job's other message follows through the pacing.
        view = status_view(outcome.job)
        await interaction.response.edit_message(content=status_content(view), attachments=[], view=None)
        adapter.surface.show_deleted(outcome.job, skip=interaction.message.id if interaction.message else None)
        return
    await interaction.response.defer()  # a cancel: the job's own events update its status message


async def on_offer(interaction: discord.Interaction, verb: str, token: str) -> None:
    """Confirm or Decline under a costly request's offer (the service checks it is the owner)."""
    adapter = adapter_of(interaction)
    command = Command(name=verb, words=[token])
    answer = await run_command(adapter.service, command, interaction_origin(interaction), interaction_actor(interaction))
    if answer.started:
        await interaction.response.defer()  # the offer is the job's status message now: its events edit it
    else:
        await interaction.response.edit_message(content=plain(answer.text), view=None)


async def after_reaction(adapter: DiscordHost, outcome: Outcome, user_id: int) -> None:
    """What a reaction's outcome shows: a new job's status message, the file by DM, or a deletion."""
    if outcome.started:
        await adapter.surface.announce(outcome.job)
    elif outcome.file_path is not None:
        await adapter.delivery.send_file_by_dm(outcome.job, user_id, outcome.text)
    elif outcome.job.deleted_at is not None:
        adapter.surface.show_deleted(outcome.job)


def token_alive(job: Job, interaction: discord.Interaction, margin: float) -> bool:
    expires = job.origin.extra.get("interaction_expires_at") or interaction.created_at.timestamp() + TOKEN_LIFETIME
    return time.time() < float(expires) - margin
