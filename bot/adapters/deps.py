"""What a chat adapter's parts may use of the bot: the core's service and bus, the settings, the
store (for message look-ups) and the other adapters. Listener modules see this and their
platform's small host interface (`slack/host.py`, `discord_bot/host.py`), never the composition
root or the adapter class, so no part of an adapter imports its entry object back."""
from __future__ import annotations

from typing import Protocol

from bot.adapters.base import ChatAdapter
from bot.config import Settings
from bot.core.events import EventBus
from bot.core.models import Job
from bot.core.service import JobService
from storage.contract import Store


class CoreApp(Protocol):
    settings: Settings
    store: Store
    bus: EventBus
    service: JobService
    adapters: dict[str, ChatAdapter]

    async def announce(self, job: Job) -> None: ...
