"""The Discord adapter: a discord.py client wired to the job service and the event bus."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import discord
from discord import app_commands

from bot.adapters.discord_bot import commands, reactions
from bot.adapters.discord_bot.buttons import DYNAMIC_ITEMS
from bot.adapters.discord_bot.endpoints import apply_endpoints
from bot.adapters.discord_bot.surface import TOKEN_LIFETIME, StatusSurface
from bot.app import App
from bot.core.events import Subscription
from bot.core.models import Job, Origin

log = logging.getLogger(__name__)

PLATFORM = "discord"


def intents() -> discord.Intents:
    # Guilds (upload limits, channels) and reactions; no privileged intent (no message content).
    chosen = discord.Intents.none()
    chosen.guilds = True
    chosen.guild_reactions = True
    chosen.dm_reactions = True
    return chosen


class VideoBotClient(discord.Client):
    def __init__(self, adapter: DiscordAdapter) -> None:
        super().__init__(intents=intents(), guild_ready_timeout=adapter.settings.guild_ready_timeout)
        self.adapter = adapter
        self.tree: app_commands.CommandTree[VideoBotClient] = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        commands.register(self.tree, self.adapter)
        if self.adapter.settings.sync_commands:
            await self.tree.sync()
            # Global commands take a while to show up; guild copies are there at once.
            for guild_id in self.adapter.settings.guild_id_list:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        self.adapter.ready.set()

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await reactions.on_raw_reaction_add(self.adapter, payload)


class DiscordAdapter:
    platform = PLATFORM

    def __init__(self, app: App) -> None:
        self.app = app
        self.settings = app.settings.discord
        self.ready = asyncio.Event()
        self.surface = StatusSurface(self)
        self.client = VideoBotClient(self)
        self._subscription: Subscription | None = None
        self._connection: asyncio.Task[None] | None = None
        #: Jobs created before this are "adopted": an earlier process may have posted for them.
        self.started_at = time.time()
        #: Set by stop(): deliveries then fail as transient (the runner retries after a restart).
        self.stopped = False

    async def start(self) -> None:
        """Log in, connect the gateway and return once events are being received."""
        token = self.settings.token
        assert token is not None, "DISCORD_TOKEN is not set"
        self.stopped = False
        apply_endpoints(self.settings)
        self._subscription = self.app.bus.subscribe(self.surface.on_event, lambda e: e.job.origin.platform == PLATFORM)
        await self.client.login(token.get_secret_value())
        self._connection = asyncio.create_task(self.client.connect(), name="discord-gateway")
        connected = asyncio.create_task(self.client.wait_until_ready())
        await asyncio.wait([connected, self._connection], return_when=asyncio.FIRST_COMPLETED)
        if not connected.done():
            connected.cancel()
            self._connection.result()  # raises why the gateway could not be reached

    async def wait_closed(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._connection

    async def stop(self) -> None:
        """Disconnect. Pending edits are dropped; the next start resumes through the bot token."""
        self.stopped = True
        if self._subscription is not None:
            self.app.bus.unsubscribe(self._subscription)
            self._subscription = None
        await self.surface.close()
        await self.client.close()
        if self._connection is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._connection

    async def deliver(self, job: Job) -> dict[str, Any] | None:
        return await self.surface.deliver(job)

    # --- helpers used by commands, buttons and reactions ------------------------------------

    def origin_for(self, interaction: discord.Interaction, *, status_message_id: int | None = None) -> Origin:
        user = interaction.user
        return Origin(
            platform=PLATFORM,
            workspace_id=str(interaction.guild_id) if interaction.guild_id else None,
            channel_id=str(interaction.channel_id) if interaction.channel_id else None,
            user_id=str(user.id),
            user_name=user.display_name,
            status_message_id=str(status_message_id) if status_message_id else None,
            extra={
                "application_id": str(interaction.application_id),
                # When the interaction token dies; after it, the bot token takes over.
                "interaction_expires_at": interaction.created_at.timestamp() + TOKEN_LIFETIME,
                "filesize_limit": interaction.filesize_limit,
            },
        )

    @property
    def bot_user_id(self) -> int:
        """The bot's user id (known after login): the author of everything it posts."""
        user = self.client.user
        return user.id if user is not None else int(self.client.application_id or 0)

    def upload_limit(self, guild_id: str | None) -> int:
        """The cap for bot-token uploads: the guild's (boosts raise it), else Discord's default."""
        guild = self.client.get_guild(int(guild_id)) if guild_id else None
        return guild.filesize_limit if guild is not None else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
