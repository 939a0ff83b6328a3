"""The Discord adapter: a discord.py client wired to the job service and the event bus.

The adapter object owns the pieces (status board, delivery) and registers the listener
modules on the client (`register(client or tree, adapter)` each); listener modules never
import this module back.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import discord
from discord import app_commands

from bot.adapters.deps import CoreOfApp
from bot.adapters.discord_bot import buttons, commands, reactions
from bot.adapters.discord_bot.delivery import Delivery
from bot.adapters.discord_bot.endpoints import apply_endpoints
from bot.adapters.discord_bot.flows import PLATFORM, AcksFirst
from bot.adapters.discord_bot.status import StatusBoard
from bot.app import App
from bot.core.events import Subscription
from bot.core.models import Job, in_chat

log = logging.getLogger(__name__)


def intents() -> discord.Intents:
    # Guilds (upload limits, channels) and reactions; no privileged intent (no message content).
    chosen = discord.Intents.none()
    chosen.guilds = True
    chosen.guild_reactions = True
    chosen.dm_reactions = True
    return chosen


def client_options(adapter: DiscordAdapter) -> dict[str, Any]:
    settings = adapter.settings
    options: dict[str, Any] = {
        "intents": intents(),
        "guild_ready_timeout": settings.guild_ready_timeout,
        # Prompts and names are user text: nothing the bot says pings anyone unless a
        # post names its mentions explicitly (the result post: its requester).
        "allowed_mentions": discord.AllowedMentions.none(),
    }
    if settings.sharded:
        # This gateway's shards of DISCORD_SHARD_COUNT; Discord routes each guild's events to
        # shard (guild_id >> 22) % count, so the gateways together cover every guild once.
        options.update(shard_count=settings.shard_count, shard_ids=settings.shard_id_list)
    return options


class _VideoBot:
    """What the plain and the sharded client share: the command tree and the set-up."""

    adapter: DiscordAdapter
    tree: app_commands.CommandTree[Any]

    def _setup(self, adapter: DiscordAdapter) -> None:
        self.adapter = adapter
        # Every command, for both kinds of install (a server's, and a user's: usable wherever that user
        # is, even where the bot is not a member) and in servers, DMs with the bot and group DMs.
        self.tree = app_commands.CommandTree(
            self,  # type: ignore[arg-type]
            allowed_installs=app_commands.AppInstallationType(guild=True, user=True),
            allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=True),
        )

    async def setup_hook(self) -> None:
        adapter = self.adapter
        buttons.register(self, adapter)  # type: ignore[arg-type]
        reactions.register(self, adapter)  # type: ignore[arg-type]
        commands.register(self.tree, adapter)
        if adapter.settings.sync_commands and not adapter.delivery_only:
            await self.tree.sync()
            # Global commands take a while to show up; guild copies are there at once.
            for guild_id in adapter.settings.guild_id_list:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        adapter.ready.set()


class VideoBotClient(_VideoBot, discord.Client):
    def __init__(self, adapter: DiscordAdapter) -> None:
        discord.Client.__init__(self, **client_options(adapter))
        self._setup(adapter)


class ShardedVideoBotClient(_VideoBot, discord.AutoShardedClient):
    """DISCORD_SHARD_COUNT / DISCORD_SHARD_IDS: several shards over one connection pool."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        discord.AutoShardedClient.__init__(self, **client_options(adapter))
        self._setup(adapter)


def make_client(adapter: DiscordAdapter) -> discord.Client:
    return ShardedVideoBotClient(adapter) if adapter.settings.sharded else VideoBotClient(adapter)


class DiscordAdapter(CoreOfApp):  # service, store, public_url: deps.Core over self.app
    platform = PLATFORM

    def __init__(self, app: App, *, delivery_only: bool = False) -> None:
        self.app = app
        self.settings = app.settings.discord
        #: A worker's adapter: logs in for the REST API (results go out with the bot token) but
        #: opens no gateway connection, registers no commands and renders no progress.
        self.delivery_only = delivery_only
        self.ready = asyncio.Event()
        self.acks = AcksFirst()
        self.surface = StatusBoard(self)
        self.delivery = Delivery(self)
        self.client = make_client(self)
        self._subscription: Subscription | None = None
        self._connection: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
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
        if self.delivery_only:
            await self.client.login(token.get_secret_value())  # REST only: sets `ready` (setup_hook)
            return
        self._subscription = self.app.bus.subscribe(self.surface.on_event, lambda e: e.job.origin.platform == PLATFORM and in_chat(e.job))
        self.app.adapters[PLATFORM] = self  # jobs started outside chat (the web) are announced here
        await self.client.login(token.get_secret_value())
        self._connection = asyncio.create_task(self.client.connect(), name="discord-gateway")
        connected = asyncio.create_task(self.client.wait_until_ready())
        await asyncio.wait([connected, self._connection], return_when=asyncio.FIRST_COMPLETED)
        if not connected.done():
            connected.cancel()
            self._connection.result()  # raises why the gateway could not be reached

    async def wait_closed(self) -> None:
        if self.delivery_only:
            await self._closed.wait()
            return
        if self._connection is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._connection

    async def stop(self) -> None:
        """Disconnect. Pending status edits get a moment to go out; the next start resumes
        the rest through the bot token."""
        self.stopped = True
        if self.app.adapters.get(PLATFORM) is self:
            del self.app.adapters[PLATFORM]
        if self._subscription is not None:
            self.app.bus.unsubscribe(self._subscription)
            self._subscription = None
        await self.surface.close()
        self.acks.close()
        await self.client.close()
        if self.delivery_only:
            self._closed.set()
        if self._connection is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._connection

    async def deliver(self, job: Job) -> dict[str, Any] | None:
        return await self.delivery.deliver(job)

    async def announce(self, job: Job) -> None:
        """A job started outside chat (the web gallery): its status message now, as for a reaction's."""
        await self.surface.announce(job)

    @property
    def bot_user_id(self) -> int:
        """The bot's user id (known after login): the author of everything it posts."""
        user = self.client.user
        return user.id if user is not None else int(self.client.application_id or 0)

    def upload_limit(self, guild_id: str | None) -> int:
        """The cap for bot-token uploads: the guild's (boosts raise it), else Discord's default."""
        guild = self.client.get_guild(int(guild_id)) if guild_id else None
        return guild.filesize_limit if guild is not None else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
