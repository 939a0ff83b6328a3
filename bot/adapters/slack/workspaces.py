"""Many workspaces on one deployment: their installations, fresh tokens, and bolt's OAuth stores.

- `Workspaces` keeps each workspace's installation in the project's own database (encrypted with
  the secret box: the database never holds a token in clear) and hands out a usable bot token.
  A rotating token within SLACK_TOKEN_REFRESH_MARGIN_SECONDS of its expiry is refreshed with
  `oauth.v2.access` (`grant_type=refresh_token`) by one process at a time: the refresher holds a
  lock row in the database; the others wait for the new pair to appear in the store. The new pair
  is stored before anyone uses it, so the single-use refresh token is never lost.
- `InstallationStore` and `SignedStateStore` implement slack_sdk's async interfaces over it, for
  slack-bolt's install flow (`/slack/install`, `/slack/oauth_redirect`).
- `WorkspaceAuthorize` is bolt's authorize: each request gets its workspace's fresh token.

Rows are keyed by team id; an Enterprise Grid org-wide install (no team) by its enterprise id,
and a team of that org without its own install falls back to it.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import socket
import time
from typing import Any

from pydantic import BaseModel, Field
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import SlackSettings
from bot.core.secret_box import SecretBox
from storage.contract import InstallationRows
from storage.models import InstallationRow

log = logging.getLogger(__name__)

PLATFORM = "slack"
#: How long a refresher may hold a workspace's lock (a dead holder's lock lapses after this).
LOCK_SECONDS = 30.0
#: How often a process waiting for another's refresh looks for the new pair.
LOCK_POLL_SECONDS = 0.05
#: A token read from the database is trusted this long before being read again (another process
#: may have refreshed it: the old one still works until its own expiry, so this only saves reads).
CACHE_SECONDS = 30.0


class NotInstalled(SlackClientError):
    """No installation for the workspace (never installed, uninstalled, tokens revoked)."""


class TokenRefreshFailed(SlackClientError):
    """Slack refused to refresh the workspace's token (its refresh token was revoked)."""


class WorkspaceBot(BaseModel):
    """One workspace's installation as the bot keeps it (sealed whole into the database row)."""

    app_id: str | None = None
    enterprise_id: str | None = None
    enterprise_name: str | None = None
    team_id: str | None = None
    team_name: str | None = None
    is_enterprise_install: bool = False
    bot_token: str = Field(repr=False)
    bot_id: str | None = None
    bot_user_id: str | None = None
    bot_scopes: list[str] = []
    bot_refresh_token: str | None = Field(default=None, repr=False)
    bot_token_expires_at: float | None = None
    installer_user_id: str | None = None
    installed_at: float = Field(default_factory=time.time)

    @property
    def key(self) -> tuple[str, str]:
        return _key(self.enterprise_id if self.is_enterprise_install else None, self.team_id)

    def due(self, margin: float, now: float | None = None) -> bool:
        """Refresh before use: a rotating token expiring within `margin` seconds."""
        if self.bot_refresh_token is None or self.bot_token_expires_at is None:
            return False
        return (now or time.time()) + margin >= self.bot_token_expires_at

    @classmethod
    def of_installation(cls, i: Installation | Bot, installer: str | None = None) -> WorkspaceBot:
        return cls(
            app_id=i.app_id, enterprise_id=i.enterprise_id, enterprise_name=i.enterprise_name, team_id=i.team_id, team_name=i.team_name,
            is_enterprise_install=bool(i.is_enterprise_install), bot_token=str(i.bot_token), bot_id=i.bot_id, bot_user_id=i.bot_user_id,
            bot_scopes=list(i.bot_scopes or []), bot_refresh_token=i.bot_refresh_token,
            bot_token_expires_at=float(i.bot_token_expires_at) if i.bot_token_expires_at else None,
            installer_user_id=installer or getattr(i, "user_id", None), installed_at=float(i.installed_at or time.time()),
        )  # fmt: skip

    def as_bot(self) -> Bot:
        return Bot(
            app_id=self.app_id, enterprise_id=self.enterprise_id, enterprise_name=self.enterprise_name, team_id=self.team_id,
            team_name=self.team_name, bot_token=self.bot_token, bot_id=self.bot_id or "", bot_user_id=self.bot_user_id or "",
            bot_scopes=self.bot_scopes, bot_refresh_token=self.bot_refresh_token,
            bot_token_expires_at=int(self.bot_token_expires_at) if self.bot_token_expires_at else None,
            is_enterprise_install=self.is_enterprise_install, installed_at=self.installed_at,
        )  # fmt: skip

    def as_installation(self) -> Installation:
        return Installation(
            app_id=self.app_id, enterprise_id=self.enterprise_id, enterprise_name=self.enterprise_name, team_id=self.team_id,
            team_name=self.team_name, bot_token=self.bot_token, bot_id=self.bot_id, bot_user_id=self.bot_user_id,
            bot_scopes=self.bot_scopes, bot_refresh_token=self.bot_refresh_token,
            bot_token_expires_at=int(self.bot_token_expires_at) if self.bot_token_expires_at else None,
            user_id=self.installer_user_id or "", is_enterprise_install=self.is_enterprise_install, installed_at=self.installed_at,
        )  # fmt: skip


def _key(enterprise_id: str | None, team_id: str | None) -> tuple[str, str]:
    """The row key: the team when there is one, else (org-wide install) the enterprise."""
    return ("", team_id) if team_id else (enterprise_id or "", "")


class Workspaces:
    def __init__(self, rows: InstallationRows, box: SecretBox, settings: SlackSettings, client: AsyncWebClient) -> None:
        self.rows = rows
        self.box = box
        self.settings = settings
        #: Token-less: oauth.v2.access authenticates with the client id and secret.
        self.client = client
        self.holder = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self._cache: dict[tuple[str, str], tuple[WorkspaceBot, float]] = {}
        self._refreshing: dict[tuple[str, str], asyncio.Lock] = {}
        #: Refreshes this process made (benchmarks, tests' explanations).
        self.refreshes = 0

    # --- the rows -------------------------------------------------------------------------------

    async def save(self, bot: WorkspaceBot) -> None:
        enterprise, team = bot.key
        now = time.time()
        sealed = self.box.seal(bot.model_dump_json())
        await self.rows.save(InstallationRow(PLATFORM, enterprise, team, bot.is_enterprise_install, sealed, bot.bot_token_expires_at, bot.installed_at, now))
        self._cache[bot.key] = (bot, time.monotonic())

    async def _read(self, key: tuple[str, str]) -> WorkspaceBot | None:
        row = await self.rows.find(PLATFORM, *key)
        if row is None:
            self._cache.pop(key, None)
            return None
        bot = WorkspaceBot.model_validate_json(self.box.open(row.secret))
        self._cache[key] = (bot, time.monotonic())
        return bot

    async def find(self, team_id: str | None, enterprise_id: str | None = None, *, cached: bool = True) -> WorkspaceBot | None:
        """The installation serving a team (its own, else its org's), without refreshing."""
        keys = [_key(None, team_id)] if team_id else []
        if enterprise_id:
            keys.append(_key(enterprise_id, None))
        for key in keys:
            hit = self._cache.get(key) if cached else None
            if hit is not None and time.monotonic() - hit[1] < CACHE_SECONDS:
                return hit[0]
            bot = await self._read(key)
            if bot is not None:
                return bot
        return None

    async def remove(self, team_id: str | None, enterprise_id: str | None = None) -> bool:
        key = _key(enterprise_id if not team_id else None, team_id)
        self._cache.pop(key, None)
        return await self.rows.delete(PLATFORM, *key)

    async def installed(self) -> list[WorkspaceBot]:
        return [WorkspaceBot.model_validate_json(self.box.open(r.secret)) for r in await self.rows.all(PLATFORM)]

    # --- a usable token -----------------------------------------------------------------------------

    async def bot(self, team_id: str | None, enterprise_id: str | None = None) -> WorkspaceBot:
        """The workspace's installation with a token good for the next SLACK_TOKEN_REFRESH_MARGIN_SECONDS."""
        bot = await self.find(team_id, enterprise_id)
        if bot is None:
            raise NotInstalled(f"videobot is not installed in Slack workspace {team_id or enterprise_id}")
        margin = self.settings.token_refresh_margin_seconds
        if not bot.due(margin):
            return bot
        lock = self._refreshing.setdefault(bot.key, asyncio.Lock())
        async with lock:  # one coroutine of this process; the database lock below is for the others
            return await self._refreshed(bot.key, margin)

    async def _refreshed(self, key: tuple[str, str], margin: float) -> WorkspaceBot:
        name = f"{PLATFORM}-token:{key[0]}:{key[1]}"
        deadline = time.monotonic() + LOCK_SECONDS
        while True:
            bot = await self._read(key)  # a refresh by anyone shows here
            if bot is None:
                raise NotInstalled(f"videobot was removed from Slack workspace {key[1] or key[0]}")
            if not bot.due(margin):
                return bot
            if await self.rows.try_lock(name, self.holder, LOCK_SECONDS):
                try:
                    bot = await self._read(key)  # refreshed between our read and the lock?
                    if bot is None:
                        raise NotInstalled(f"videobot was removed from Slack workspace {key[1] or key[0]}")
                    if not bot.due(margin):
                        return bot
                    fresh = await self._refresh(bot)
                    await self.save(fresh)  # stored before anyone uses it: the old refresh token is spent
                    return fresh
                finally:
                    await self.rows.unlock(name, self.holder)
            if time.monotonic() > deadline:
                raise TokenRefreshFailed(f"the token of Slack workspace {key[1] or key[0]} was not refreshed within {LOCK_SECONDS:g}s")
            await asyncio.sleep(LOCK_POLL_SECONDS)

    async def _refresh(self, bot: WorkspaceBot) -> WorkspaceBot:
        assert self.settings.client_secret is not None
        try:
            answer = await self.client.oauth_v2_access(
                client_id=str(self.settings.client_id), client_secret=self.settings.client_secret.get_secret_value(),
                grant_type="refresh_token", refresh_token=str(bot.bot_refresh_token),
            )  # fmt: skip
        except SlackApiError as exc:
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else exc.response.status_code
            raise TokenRefreshFailed(f"Slack refused to refresh the token of workspace {bot.team_id or bot.enterprise_id}: {error}") from None
        self.refreshes += 1
        log.info("refreshed the bot token of Slack workspace %s", bot.team_id or bot.enterprise_id)
        return bot.model_copy(update={
            "bot_token": str(answer["access_token"]), "bot_refresh_token": answer.get("refresh_token") or bot.bot_refresh_token,
            "bot_token_expires_at": time.time() + float(answer["expires_in"]) if answer.get("expires_in") else None,
        })  # fmt: skip


class InstallationStore(AsyncInstallationStore):
    """slack_sdk's installation store over `Workspaces` (bot installations: the app asks no user scopes)."""

    def __init__(self, workspaces: Workspaces) -> None:
        self.workspaces = workspaces

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_save(self, installation: Installation) -> None:
        bot = WorkspaceBot.of_installation(installation, installation.user_id)
        await self.workspaces.save(bot)
        log.info("installed in Slack workspace %s (%s) by %s", bot.team_id or bot.enterprise_id, bot.team_name, bot.installer_user_id)

    async def async_save_bot(self, bot: Bot) -> None:
        await self.workspaces.save(WorkspaceBot.of_installation(bot))

    async def async_find_bot(self, *, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None = False) -> Bot | None:
        found = await self.workspaces.find(None if is_enterprise_install else team_id, enterprise_id)
        return found.as_bot() if found else None

    async def async_find_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None, is_enterprise_install: bool | None = False
    ) -> Installation | None:
        found = await self.workspaces.find(None if is_enterprise_install else team_id, enterprise_id)
        return found.as_installation() if found else None

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self.workspaces.remove(team_id, enterprise_id)

    async def async_delete_installation(self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None) -> None:
        if user_id is None:
            await self.workspaces.remove(team_id, enterprise_id)


class SignedStateStore(AsyncOAuthStateStore):
    """OAuth `state`: a random value signed with SLACK_STATE_SECRET and kept in the database until
    its one use (or its expiry). A forged state fails the signature before any lookup; a replayed
    one is gone from the database."""

    def __init__(self, rows: InstallationRows, secret: str, expiration_seconds: float = 600) -> None:
        self.rows = rows
        self._secret = secret.encode()
        self.expiration_seconds = expiration_seconds

    @property
    def logger(self) -> logging.Logger:
        return log

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()[:32]

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        nonce = secrets.token_urlsafe(24)
        state = f"{nonce}.{self._sign(nonce)}"
        await self.rows.issue_state(state, time.time() + self.expiration_seconds)
        return state

    async def async_consume(self, state: str) -> bool:
        nonce, _, signature = (state or "").rpartition(".")
        if not nonce or not hmac.compare_digest(signature, self._sign(nonce)):
            log.warning("refused an OAuth state that this bot did not sign")
            return False
        if not await self.rows.consume_state(state):
            log.warning("refused an OAuth state used before or expired")
            return False
        return True


class WorkspaceAuthorize(AsyncAuthorize):
    """Each request runs with its workspace's fresh token (no auth.test per request: the ids were
    stored at install)."""

    def __init__(self, workspaces: Workspaces) -> None:
        super().__init__()
        self.workspaces = workspaces

    async def __call__(
        self, *, context: AsyncBoltContext, enterprise_id: str | None, team_id: str | None, user_id: str | None, **_: Any
    ) -> AuthorizeResult | None:
        try:
            bot = await self.workspaces.bot(team_id, enterprise_id)
        except (NotInstalled, TokenRefreshFailed) as exc:
            log.info("request from a workspace without a usable installation: %s", exc)
            return None
        return AuthorizeResult(
            enterprise_id=bot.enterprise_id, team_id=bot.team_id or team_id, team=bot.team_name, bot_user_id=bot.bot_user_id,
            bot_id=bot.bot_id, bot_token=bot.bot_token, bot_scopes=bot.bot_scopes, user_id=user_id,
        )  # fmt: skip
