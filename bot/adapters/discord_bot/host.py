"""The Discord adapter as its parts see it: the core (`deps.Core`: service, store, gallery address),
the discord.py client, the status board, delivery's direct messages, the ack gate. `DiscordAdapter`
(client.py) implements it; commands, buttons, reactions, the status board and delivery are typed
against this, not the class, so none of them imports the client module back."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import discord

from bot.adapters.deps import Core
from bot.config import DiscordSettings
from bot.core.models import Job


class Board(Protocol):
    """The status board's part the listeners and delivery use (status.StatusBoard implements it)."""

    def register_interaction(self, message_id: int, interaction: discord.Interaction) -> None: ...

    def forget_interaction(self, message_id: int) -> None: ...

    def offer_view(self, token: str) -> discord.ui.View: ...

    async def announce(self, job: Job) -> None: ...

    def show_deleted(self, job: Job, *, skip: int | None = None) -> None: ...

    async def dm_channel(self, user_id: str | int) -> discord.PartialMessageable: ...

    async def tell(self, user_id: str | int, text: str) -> None: ...

    async def ensure_status(self, job: Job) -> int | None: ...

    def live_interaction(self, job: Job, message_id: int | None) -> discord.Interaction | None: ...

    async def scan(
        self, channel: discord.PartialMessageable, matches: Callable[[discord.Message], bool], *, after: int | None
    ) -> discord.Message | None: ...


class Files(Protocol):
    """Delivery's part the listeners use (delivery.Delivery implements it)."""

    async def send_file_by_dm(self, job: Job, user_id: int | str, text: str) -> None: ...


class Acks(Protocol):
    """The ack gate (flows.AcksFirst): status rendering waits while interactions wait for their defer."""

    def enter(self) -> None: ...

    def leave(self) -> None: ...

    async def wait(self) -> None: ...


class DiscordHost(Core, Protocol):
    settings: DiscordSettings
    client: discord.Client
    platform: str
    delivery_only: bool
    ready: asyncio.Event
    started_at: float
    stopped: bool

    @property
    def acks(self) -> Acks: ...

    @property
    def surface(self) -> Board: ...

    @property
    def delivery(self) -> Files: ...

    @property
    def bot_user_id(self) -> int: ...

    def upload_limit(self, guild_id: str | None) -> int: ...
