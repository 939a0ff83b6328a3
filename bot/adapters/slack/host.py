"""The Slack adapter as its listener modules see it: the core (`deps.Core`: service, store, gallery
address), the slack_sdk client, the status surface and a few helpers. `SlackAdapter` (app.py)
implements it; listeners are typed against this, not the class."""
from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.deps import Core
from bot.adapters.slack.lookup import Me
from bot.config import SlackSettings
from bot.core.models import Actor, Job, Origin


class Cards(Protocol):
    """The status surface's part the listeners and delivery use (status.StatusSurface implements it)."""

    async def post_status(self, job: Job, *, adopt: bool = False) -> str: ...

    def forget(self, job_id: str) -> None: ...

    async def remove(self, job: Job) -> None: ...

    async def job_for_message(self, channel: str, ts: str, author: str | None, team_id: str | None = None) -> Job | None: ...

    async def status_message(self, job: Job) -> tuple[str | None, str | None]: ...


class SlackHost(Core, Protocol):
    settings: SlackSettings
    client: AsyncWebClient
    platform: str
    delivery_only: bool
    bot_user_id: str | None

    @property
    def surface(self) -> Cards: ...

    @property
    def closed(self) -> bool: ...

    async def me(self, team_id: str | None = None) -> Me: ...

    async def client_for(self, team_id: str | None, enterprise_id: str | None = None) -> AsyncWebClient:
        """The client with the workspace's token (raises workspaces.NotInstalled when it has none)."""
        ...

    async def forget_workspace(self, team_id: str | None, enterprise_id: str | None = None) -> bool: ...

    def later(self, work: Coroutine[Any, Any, None], name: str) -> None: ...

    def origin_for(
        self, team_id: str | None, channel_id: str, user_id: str, user_name: str | None, *, channel_name: str | None = None,
        enterprise_id: str | None = None,
    ) -> Origin: ...

    async def actor(self, user_id: str, *, team_id: str | None, check_workspace_admin: bool = False) -> Actor: ...
