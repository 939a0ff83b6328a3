"""What a chat adapter's parts may use of the bot: the core's job service, the store (for message
look-ups) and the gallery's public address. Listener modules see this through their platform's
small host interface (`slack/host.py`, `discord_bot/host.py`), never the composition root or the
adapter class, so no part of an adapter imports its entry object back."""
from __future__ import annotations

from typing import Protocol

from bot.config import Settings
from bot.core.service import JobService
from storage.contract import Store


class Core(Protocol):
    """The core as an adapter's parts reach it; each adapter class implements it over its `App`."""

    @property
    def service(self) -> JobService:
        """The one door: jobs, actions, commands, settings."""
        ...

    @property
    def store(self) -> Store:
        """The jobs' store, for what the service does not offer: a platform's unfinished or recent jobs,
        a set's takes, a job row a worker waits on, an event log line."""
        ...

    @property
    def public_url(self) -> str | None:
        """Where the web gallery is served (VIDEOBOT_PUBLIC_URL), for links in posts."""
        ...


class AppParts(Protocol):
    """What an adapter class holds of the composition root (`bot.app.App` has these)."""

    service: JobService
    store: Store
    settings: Settings


class CoreOfApp:
    """`Core` over the adapter's `App`: written once for every adapter class that holds one."""

    app: AppParts

    @property
    def service(self) -> JobService:
        return self.app.service

    @property
    def store(self) -> Store:
        return self.app.store

    @property
    def public_url(self) -> str | None:
        return self.app.settings.core.public_url
