"""The Slack adapter: a slack-bolt AsyncApp wired to the job service and the event bus.

Socket Mode when SLACK_APP_TOKEN is set (no public URL needed), else HTTP on
SLACK_HTTP_HOST:SLACK_HTTP_PORT at /slack/events, where bolt checks every request's
signature with SLACK_SIGNING_SECRET (401 otherwise). Web API calls go to SLACK_API_URL
when set, through one shared HTTP session, and wait out 429s (Retry-After). A dropped
connection is retried only for calls that are safe to send twice: a post whose answer was
lost may have been made, so the surface looks for it instead (see surface.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler, AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack import actions, commands, events, views
from bot.adapters.slack.apierror import STOPPED_MESSAGE, delivery_failure, slack_error
from bot.adapters.slack.lookup import Me
from bot.adapters.slack.surface import StatusSurface
from bot.app import App
from bot.core.errors import ConfigError, DeliveryFailed
from bot.core.events import Subscription
from bot.core.models import Actor, Job, Origin

log = logging.getLogger(__name__)

PLATFORM = "slack"
EVENTS_PATH = "/slack/events"


#: Calls that create something: sent twice they post twice, so a dropped connection is not retried blindly.
NOT_IDEMPOTENT = frozenset({"chat.postMessage", "files.completeUploadExternal", "chat.postEphemeral", "chat.scheduleMessage"})


class SafeConnectionErrorRetryHandler(AsyncConnectionErrorRetryHandler):
    """Retries a dropped connection, except for calls that may have been carried out already."""

    async def _can_retry_async(
        self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None, error: Exception | None = None
    ) -> bool:
        if request.url.rstrip("/").rsplit("/", 1)[-1] in NOT_IDEMPOTENT:
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)


def web_client(token: str, api_url: str | None, rate_limit_retries: int) -> AsyncWebClient:
    base_url = api_url or AsyncWebClient.BASE_URL
    return AsyncWebClient(
        token=token,
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        # One session for every call: a new connection per call would not hold up under load.
        session=aiohttp.ClientSession(),
        retry_handlers=[SafeConnectionErrorRetryHandler(), AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries)],
    )


class _NoClientTokenNotice(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN itself and warns that the given client wins; that is the intent."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


logging.getLogger("slack_bolt.AsyncApp").addFilter(_NoClientTokenNotice())


class SlackAdapter:
    platform = PLATFORM

    def __init__(self, app: App) -> None:
        """Build inside a running event loop (the HTTP session belongs to it)."""
        self.app = app
        self.settings = settings = app.settings.slack
        if settings.bot_token is None:
            raise ConfigError("SLACK_BOT_TOKEN is not set.")
        if not settings.socket_mode and settings.signing_secret is None:
            raise ConfigError("SLACK_SIGNING_SECRET is needed in HTTP mode (or set SLACK_APP_TOKEN to use Socket Mode).")
        self.client = web_client(settings.bot_token.get_secret_value(), settings.api_url, settings.rate_limit_retries)
        self.bolt = AsyncApp(
            client=self.client,
            signing_secret=settings.signing_secret.get_secret_value() if settings.signing_secret else "",
            # Socket Mode messages come over an authenticated WebSocket, unsigned.
            request_verification_enabled=not settings.socket_mode,
        )
        for module in (commands, actions, views, events):
            module.register(self.bolt, self)
        self.surface = StatusSurface(self)
        self.http_url: str | None = None
        self.bot_user_id: str | None = None
        self._me: Me | None = None
        self._subscription: Subscription | None = None
        self._web: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._closed = asyncio.Event()
        self._stopping = False

    async def start(self) -> None:
        """Check the token, subscribe to progress, then serve (HTTP or Socket Mode)."""
        try:
            auth = await self.client.auth_test()
        except SlackApiError as exc:
            raise ConfigError(f"Slack refused SLACK_BOT_TOKEN ({slack_error(exc)}).") from None
        self.bot_user_id = auth.get("user_id")
        self._me = Me(user_id=auth.get("user_id"), bot_id=auth.get("bot_id"))
        self.surface.started_at = time.time()
        self._subscription = self.app.bus.subscribe(self.surface.on_event, lambda e: e.job.origin.platform == PLATFORM)
        # Jobs from before this start whose status message never reached the store: adopt or post.
        self.surface.spawn(self.surface.reconcile(), "slack-reconcile")
        if self.settings.socket_mode:
            assert self.settings.app_token is not None
            self._socket = AsyncSocketModeHandler(self.bolt, self.settings.app_token.get_secret_value(), web_client=self.client)
            await self._socket.connect_async()
            return
        web_app = web.Application()
        web_app.router.add_post(EVENTS_PATH, self._handle)
        self._web = web.AppRunner(web_app, access_log=None)
        await self._web.setup()
        site = web.TCPSite(self._web, self.settings.http_host, self.settings.http_port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1] if site._server else self.settings.http_port  # type: ignore[union-attr]
        self.http_url = f"http://{self.settings.http_host}:{port}{EVENTS_PATH}"
        log.info("Slack requests at %s", self.http_url)

    async def _handle(self, request: web.Request) -> web.Response:
        response = await self.bolt.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        """Stopping or stopped: calls failing now fail because of the stop, not because of Slack."""
        return self._stopping or self._closed.is_set()

    async def me(self) -> Me:
        """The bot's own ids (auth.test), asked once; deliver may run before start (resumed jobs)."""
        if self._me is None:
            auth = await self.client.auth_test()
            self._me = Me(user_id=auth.get("user_id"), bot_id=auth.get("bot_id"))
        return self._me

    async def stop(self) -> None:
        """Stop serving. Pending updates are dropped; the next start picks the jobs up from the store."""
        self._stopping = True
        if self._subscription is not None:
            self.app.bus.unsubscribe(self._subscription)
            self._subscription = None
        await self.surface.close()
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        if self._web is not None:
            await self._web.cleanup()
            self._web = None
        if self.client.session is not None and not self.client.session.closed:
            await self.client.session.close()
        self._closed.set()

    async def deliver(self, job: Job) -> dict[str, Any] | None:
        """Post the result; failures come out as DeliveryFailed, transient or permanent (apierror.py)."""
        if self.closed:
            # Stopped before the runner (videobot run's order): transient, the job stays delivering.
            raise DeliveryFailed(STOPPED_MESSAGE, transient=True, detail="slack adapter stopped")
        try:
            return await self.surface.deliver(job)
        except DeliveryFailed:
            raise
        except Exception as exc:
            if self.closed:  # the session closed under the call: a stop, not Slack's answer
                raise DeliveryFailed(STOPPED_MESSAGE, transient=True, detail=f"stopped: {exc!r}"[:200]) from exc
            failure = delivery_failure(exc, job.id)
            if failure is None:
                raise
            log.warning("job %s: delivery failed (%s): %s", job.id, "transient" if failure.transient else "permanent", failure.detail)
            raise failure from exc

    # --- helpers for commands, actions, views and events ------------------------------------

    def origin_for(self, team_id: str | None, channel_id: str, user_id: str, user_name: str | None) -> Origin:
        return Origin(platform=PLATFORM, workspace_id=team_id, channel_id=channel_id, user_id=user_id, user_name=user_name)

    async def actor(self, user_id: str, *, team_id: str | None, check_workspace_admin: bool = False) -> Actor:
        """The user in their workspace, marked admin there if the bot's settings or (when it matters) Slack say so."""
        base = Actor(user_id=user_id, platform=PLATFORM, workspace_id=team_id)
        if self.app.service.is_admin(user_id):
            return base.model_copy(update={"is_admin": True})
        if not check_workspace_admin:
            return base
        try:
            user = (await self.client.users_info(user=user_id))["user"]
        except SlackApiError as exc:
            log.warning("users.info failed for %s: %s", user_id, slack_error(exc))
            return base
        return base.model_copy(update={"is_admin": bool(user.get("is_admin") or user.get("is_owner"))})
