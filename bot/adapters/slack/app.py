"""The Slack adapter: a slack-bolt AsyncApp wired to the job service and the event bus.

Socket Mode when SLACK_APP_TOKEN is set (no public URL needed), else HTTP on
SLACK_HTTP_HOST:SLACK_HTTP_PORT at /slack/events, where bolt checks every request's
signature with SLACK_SIGNING_SECRET (401 otherwise). Web API calls go to SLACK_API_URL
when set, through one shared HTTP session, and wait out 429s (Retry-After), except
`chat.update`: its per-workspace scheduler slows down on a 429 instead (status.py). A
dropped connection is retried only for calls that are safe to send twice: a post whose
answer was lost may have been made, so the surface looks for it instead.

One workspace (SLACK_BOT_TOKEN) or many: with SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and
SLACK_STATE_SECRET instead, the app is installed through Slack's OAuth flow (install.py) and every
call uses the token of the workspace it is for (`client_for`, workspaces.py), refreshed before it
expires when token rotation is on.

The adapter registers its listener modules (`register(bolt, adapter)` each); they never
import this module back.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.parse
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler, AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.deps import CoreOfApp
from bot.adapters.slack import buttons, commands, installs, reactions, settings_modal, shortcuts, stories, views
from bot.adapters.slack.apierror import STOPPED_MESSAGE, delivery_failure, slack_error
from bot.adapters.slack.delivery import Delivery
from bot.adapters.slack.flows import ephemeral_teller, show_job
from bot.adapters.slack.install import INSTALL_PATH, REDIRECT_PATH, oauth_settings
from bot.adapters.slack.lookup import Me
from bot.adapters.slack.workspaces import NotInstalled, TokenRefreshFailed, WorkspaceAuthorize, Workspaces
from bot.adapters.slack.status import StatusSurface
from bot.observability.hooks import acked
from bot.app import App
from bot.core.errors import ConfigError, DeliveryFailed
from bot.core.events import Subscription
from bot.core.models import PLACE, Actor, Job, Origin, in_chat
from bot.core.secret_box import load_box
from storage.installations import installations_of

log = logging.getLogger(__name__)

PLATFORM = "slack"
EVENTS_PATH = "/slack/events"
LISTEN_BACKLOG = 1024
#: On stop, how long acked requests may still take to finish.
WORK_GRACE_SECONDS = 2.0


#: Calls that create something: sent twice they post twice, so a dropped connection is not retried blindly.
NOT_IDEMPOTENT = frozenset({"chat.postMessage", "files.completeUploadExternal", "chat.postEphemeral", "chat.scheduleMessage"})
#: Calls paced by a RateScheduler: a 429 is the scheduler's to handle (it slows down), not the client's.
PACED = frozenset({"chat.update"})
LISTENERS = (commands, buttons, views, reactions, shortcuts, settings_modal, stories, installs)
#: Clients kept per token (one per workspace, plus a refresh now and then): the oldest go first.
MAX_CLIENTS = 512


def _method(request: HttpRequest) -> str:
    return request.url.rstrip("/").rsplit("/", 1)[-1]


class SafeConnectionErrorRetryHandler(AsyncConnectionErrorRetryHandler):
    """Retries a dropped connection, except for calls that may have been carried out already."""

    async def _can_retry_async(
        self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None, error: Exception | None = None
    ) -> bool:
        if _method(request) in NOT_IDEMPOTENT:
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)


class UnpacedRateLimitRetryHandler(AsyncRateLimitErrorRetryHandler):
    """Waits out a 429 (Retry-After) and sends again, except for paced calls (they raise to their scheduler)."""

    async def _can_retry_async(
        self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None, error: Exception | None = None
    ) -> bool:
        if _method(request) in PACED:
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)


class _NoSecrets(logging.Filter):
    """slack_sdk logs each request and answer at DEBUG, oauth.v2.access's tokens and client secret
    included: they are blanked before any handler sees them."""

    _TOKEN = re.compile(r"xox[a-z]-[A-Za-z0-9.-]+")
    _FIELD = re.compile(r"""(['"](?:access_token|refresh_token|client_secret|code|token)['"]: ['"])[^'"]+""")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        cleaned = self._FIELD.sub(r"\1(redacted)", self._TOKEN.sub("(redacted)", text))
        if cleaned != text:
            record.msg, record.args = cleaned, None
        return True


#: The Web API clients' logger (slack_sdk's default would name no filter).
WEB_LOG = logging.getLogger("bot.adapters.slack.web")
WEB_LOG.addFilter(_NoSecrets())


def web_client(token: str | None, api_url: str | None, rate_limit_retries: int) -> AsyncWebClient:
    base_url = api_url or AsyncWebClient.BASE_URL
    return AsyncWebClient(
        token=token,
        logger=WEB_LOG,
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        # One session for every call: a new connection per call would not hold up under load.
        session=aiohttp.ClientSession(),
        retry_handlers=[SafeConnectionErrorRetryHandler(), UnpacedRateLimitRetryHandler(max_retry_count=rate_limit_retries)],
    )


class _NoClientTokenNotice(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN itself and warns that the given client wins; that is the intent."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


logging.getLogger("slack_bolt.AsyncApp").addFilter(_NoClientTokenNotice())


#: Interactive payloads whose answer is more than an ack: answered by the listener through bolt.
ANSWERED = frozenset({"view_submission", "block_suggestion"})


def _answer_needed(content_type: str, body: str) -> bool:
    if content_type == "application/json":
        return '"url_verification"' in body  # Slack checking the events URL: the challenge goes back
    if body.startswith("payload=") or "&payload=" in body:
        try:
            payload = json.loads(urllib.parse.parse_qs(body).get("payload", ["{}"])[0])
        except ValueError:
            return True  # let bolt say what is wrong with it
        return payload.get("type") in ANSWERED
    return False


def slack_place(channel_id: str | None, channel_name: str | None = None) -> str:
    """An IM (D…) is "direct": its own tenant. A private channel or group DM (G…, or Slack's
    `privategroup` / `mpdm-…` channel names in command payloads) is "private"."""
    if channel_id and channel_id.startswith("D") or channel_name == "directmessage":
        return "direct"
    if channel_id and channel_id.startswith("G") or channel_name == "privategroup" or (channel_name or "").startswith("mpdm-"):
        return "private"
    return "public"


class SlackAdapter(CoreOfApp):  # service, store, public_url: deps.Core over self.app
    platform = PLATFORM

    def __init__(self, app: App, *, delivery_only: bool = False) -> None:
        """Build inside a running event loop (the HTTP session belongs to it).

        `delivery_only`: a worker's adapter. It posts results and stills with the bot token
        (the Web API needs no connection of the gateway's) but serves no requests and renders
        no progress: the gateway does that, from the worker's signals."""
        self.app = app
        self.delivery_only = delivery_only
        self.settings = settings = app.settings.slack
        if settings.bot_token is None and not settings.oauth:
            raise ConfigError(
                "Set SLACK_BOT_TOKEN (one workspace), or SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and SLACK_STATE_SECRET "
                "(a distributed app installed through /slack/install): see docs/slack.md."
            )
        if not delivery_only and not settings.socket_mode and settings.signing_secret is None:
            raise ConfigError("SLACK_SIGNING_SECRET is needed in HTTP mode (or set SLACK_APP_TOKEN to use Socket Mode).")
        token = settings.bot_token.get_secret_value() if settings.bot_token else None
        #: The single-token mode's client; with the OAuth install a token-less one (oauth.v2.access) whose
        #: session and retry rules every workspace's client shares.
        self.client = web_client(token, settings.api_url, settings.rate_limit_retries)
        self._clients: dict[str, AsyncWebClient] = {}
        self.workspaces: Workspaces | None = None
        oauth: dict[str, Any] = {}
        if settings.oauth:
            rows = installations_of(app.store)
            self.workspaces = Workspaces(rows, load_box(app.settings.core), settings, self.client)
            oauth = {"oauth_settings": oauth_settings(settings, self.workspaces, rows), "authorize": WorkspaceAuthorize(self.workspaces)}
        self.bolt = AsyncApp(
            client=self.client,
            signing_secret=settings.signing_secret.get_secret_value() if settings.signing_secret else "",
            # Socket Mode messages come over an authenticated WebSocket, unsigned.
            request_verification_enabled=not settings.socket_mode and not delivery_only,
            # A listener's return is the answer, sent at once (bolt does not poll for the ack); each
            # listener acks and hands its work to `later`. So an ack never waits behind other requests' work.
            process_before_response=True,
            **oauth,
        )
        self._verifier = SignatureVerifier(settings.signing_secret.get_secret_value()) if settings.signing_secret else None
        for module in LISTENERS:
            module.register(self.bolt, self)
        self.surface = StatusSurface(self)
        self.delivery = Delivery(self)
        self.http_url: str | None = None
        self.bot_user_id: str | None = None
        self._me: Me | None = None
        self.install_url: str | None = None
        self._subscription: Subscription | None = None
        self._web: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._closed = asyncio.Event()
        self._stopping = False
        self._work: set[asyncio.Task[None]] = set()
        #: HTTP mode: requests acked, waiting for bolt's dispatch (see _handle).
        self._inbox: asyncio.Queue[tuple[str, str, dict[str, str]]] = asyncio.Queue()
        self._dispatcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Check the token, subscribe to progress, then serve (HTTP or Socket Mode)."""
        if self.workspaces is None:
            try:
                auth = await self.client.auth_test()
            except SlackApiError as exc:
                raise ConfigError(f"Slack refused SLACK_BOT_TOKEN ({slack_error(exc)}).") from None
            self.bot_user_id = auth.get("user_id")
            self._me = Me(user_id=auth.get("user_id"), bot_id=auth.get("bot_id"))
        if self.delivery_only:
            return
        self.surface.started_at = time.time()
        self._subscription = self.app.bus.subscribe(self.surface.on_event, lambda e: e.job.origin.platform == PLATFORM and in_chat(e.job))
        self.app.adapters[PLATFORM] = self  # jobs started outside chat (the web) are announced here
        # Jobs from before this start: a status message that never reached the store is adopted or
        # posted, and a finished job whose card may not show its ending yet is updated.
        self.surface.spawn(self.surface.reconcile(), "slack-reconcile")
        if self.settings.socket_mode:
            assert self.settings.app_token is not None
            self._socket = AsyncSocketModeHandler(self.bolt, self.settings.app_token.get_secret_value(), web_client=self.client)
            await self._socket.connect_async()
            if self.workspaces is not None:  # the install pages still need an HTTP port
                await self._serve(web.Application())
            return
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="slack-dispatch")
        web_app = web.Application()
        web_app.router.add_post(EVENTS_PATH, self._handle)
        await self._serve(web_app)

    async def _serve(self, web_app: web.Application) -> None:
        if self.workspaces is not None:
            web_app.router.add_get(INSTALL_PATH, self._oauth)
            web_app.router.add_get(REDIRECT_PATH, self._oauth)
        self._web = web.AppRunner(web_app, access_log=None)
        await self._web.setup()
        # A burst of commands opens many connections at once: room for them in the listen queue.
        site = web.TCPSite(self._web, self.settings.http_host, self.settings.http_port, backlog=LISTEN_BACKLOG)
        await site.start()
        port = site._server.sockets[0].getsockname()[1] if site._server else self.settings.http_port  # type: ignore[union-attr]
        if not self.settings.socket_mode:
            self.http_url = f"http://{self.settings.http_host}:{port}{EVENTS_PATH}"
            log.info("Slack requests at %s", self.http_url)
        if self.workspaces is not None:
            self.install_url = f"http://{self.settings.http_host}:{port}{INSTALL_PATH}"
            log.info("Slack install page at %s", self.install_url)

    async def _oauth(self, request: web.Request) -> web.Response:
        """/slack/install and /slack/oauth_redirect: slack-bolt's OAuth flow (install.py has its pages)."""
        flow = self.bolt.oauth_flow
        assert flow is not None
        bolt_request = await to_bolt_request(request)
        if request.path == INSTALL_PATH:
            response = await flow.handle_installation(bolt_request)
        else:
            response = await flow.handle_callback(bolt_request)
        return await to_aiohttp_response(response)

    async def _handle(self, request: web.Request) -> web.Response:
        """HTTP mode: a signed request is acked at once and handed to bolt after the answer.

        Slack needs only a 200 within 3 s for commands, buttons, shortcuts and events; bolt's
        own dispatch (middleware, matching, kwargs) costs far more than checking the signature,
        and 200 commands arriving together would each wait for all the others'. Requests whose
        answer carries content (a modal's form errors, Slack's URL check) go through bolt first.
        """
        received = time.monotonic()
        body = await request.text()
        if self._verifier is None or not self._verifier.is_valid_request(body, request.headers):  # type: ignore[arg-type]
            return web.json_response({"error": "invalid request"}, status=401)
        if _answer_needed(request.content_type, body):
            response = await self.bolt.async_dispatch(await to_bolt_request(request))
            acked(PLATFORM, received)
            return await to_aiohttp_response(response)
        self._inbox.put_nowait((body, request.query_string, dict(request.headers)))  # parsed later, by bolt
        acked(PLATFORM, received)
        return web.Response(status=200)

    async def _dispatch_loop(self) -> None:
        """Acked requests through bolt, one at a time, yielding between them: a burst's acks go out
        first instead of waiting behind the dispatch (and the work) of every request before them."""
        while True:
            body, query, headers = await self._inbox.get()
            try:
                response = await self.bolt.async_dispatch(AsyncBoltRequest(body=body, query=query, headers=headers))
                if response.status >= 400:
                    log.warning("Slack request not handled (HTTP %s): %s", response.status, response.body[:200])
            except Exception:
                log.exception("Slack request failed in dispatch")
            finally:
                self._inbox.task_done()
            await asyncio.sleep(0)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        """Stopping or stopped: calls failing now fail because of the stop, not because of Slack."""
        return self._stopping or self._closed.is_set()

    async def me(self, team_id: str | None = None) -> Me:
        """The bot's own ids in a workspace: the installation's, else (one workspace) auth.test's, asked
        once; deliver may run before start (resumed jobs)."""
        if self.workspaces is not None:
            bot = await self.workspaces.bot(team_id)
            return Me(user_id=bot.bot_user_id, bot_id=bot.bot_id)
        if self._me is None:
            auth = await self.client.auth_test()
            self._me = Me(user_id=auth.get("user_id"), bot_id=auth.get("bot_id"))
        return self._me

    async def client_for(self, team_id: str | None, enterprise_id: str | None = None) -> AsyncWebClient:
        """The Web API client with the workspace's token (fresh: refreshed first when due). One workspace: the one client.

        Raises NotInstalled when the workspace has no installation (any more)."""
        if self.workspaces is None:
            return self.client
        token = (await self.workspaces.bot(team_id, enterprise_id)).bot_token
        client = self._clients.get(token)
        if client is None:
            if len(self._clients) >= MAX_CLIENTS:
                self._clients.pop(next(iter(self._clients)))
            client = self._clients[token] = AsyncWebClient(
                token=token, base_url=self.client.base_url, session=self.client.session, retry_handlers=self.client.retry_handlers,
                logger=WEB_LOG,
            )  # fmt: skip
        return client

    async def forget_workspace(self, team_id: str | None, enterprise_id: str | None = None) -> bool:
        """The workspace's installation removed (uninstalled, tokens revoked); True when there was one."""
        if self.workspaces is None:
            return False
        self._clients.clear()  # cheap to rebuild; no token of that workspace stays in memory
        return await self.workspaces.remove(team_id, enterprise_id)

    def later(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """A request's work, after its ack: run as a task the adapter owns (waited for briefly on stop)."""
        task = asyncio.create_task(work, name=name)
        self._work.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._work.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def stop(self) -> None:
        """Stop serving. Pending card states get a moment to go out (final ones first); the next
        start picks the jobs up from the store."""
        self._stopping = True
        if self.app.adapters.get(PLATFORM) is self:
            del self.app.adapters[PLATFORM]
        if self._subscription is not None:
            self.app.bus.unsubscribe(self._subscription)
            self._subscription = None
        # No new requests; those already acked are still handled (briefly), so none is lost.
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        if self._web is not None:
            await self._web.cleanup()
            self._web = None
        if self._dispatcher is not None:
            try:
                await asyncio.wait_for(self._inbox.join(), WORK_GRACE_SECONDS)
            except TimeoutError:
                log.warning("stopping with %d acked Slack requests not handled", self._inbox.qsize())
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None
        if self._work:
            _, late = await asyncio.wait(set(self._work), timeout=WORK_GRACE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.surface.close()
        if self.client.session is not None and not self.client.session.closed:
            await self.client.session.close()
        self._closed.set()

    async def announce(self, job: Job) -> None:
        """A job started outside chat (the web gallery): its status message now, as for a command
        (and a refusal handled alike: the job is stopped and its owner told privately)."""
        self.surface.posting_here(job)
        origin = job.origin
        if origin.channel_id:
            await show_job(self, job, ephemeral_teller(self, origin.channel_id, origin.user_id, origin.extra.get("thread_ts")))

    async def deliver(self, job: Job) -> dict[str, Any] | None:
        """Post the result; failures come out as DeliveryFailed, transient or permanent (apierror.py)."""
        if self.closed:
            # Stopped before the runner (videobot run's order): transient, the job stays delivering.
            raise DeliveryFailed(STOPPED_MESSAGE, transient=True, detail="slack adapter stopped")
        try:
            return await self.delivery.deliver(job)
        except DeliveryFailed:
            raise
        except NotInstalled as exc:
            raise DeliveryFailed(
                "videobot is no longer installed in this Slack workspace, so the result was not posted. "
                "Reinstall it, then run `videobot redeliver " + job.id + "`.", transient=False, detail=str(exc)[:200],
            ) from exc
        except TokenRefreshFailed as exc:
            # Tried again later: a refresh still under way elsewhere, or Slack briefly unable; a revoked
            # app is removed by its tokens_revoked / app_uninstalled event.
            raise DeliveryFailed("Slack did not renew the workspace's token yet.", transient=True, detail=str(exc)[:200]) from exc
        except Exception as exc:
            if self.closed:  # the session closed under the call: a stop, not Slack's answer
                raise DeliveryFailed(STOPPED_MESSAGE, transient=True, detail=f"stopped: {exc!r}"[:200]) from exc
            failure = delivery_failure(exc, job.id)
            if failure is None:
                raise
            log.warning("job %s: delivery failed (%s): %s", job.id, "transient" if failure.transient else "permanent", failure.detail)
            raise failure from exc

    # --- helpers for commands, actions, views and events ------------------------------------

    def origin_for(
        self, team_id: str | None, channel_id: str, user_id: str, user_name: str | None, *, channel_name: str | None = None,
        enterprise_id: str | None = None,
    ) -> Origin:
        place = slack_place(channel_id, channel_name)
        extra: dict[str, Any] = {PLACE: place} if place != "public" else {}
        if enterprise_id:  # Enterprise Grid: an org-wide install's token serves the teams without their own
            extra["enterprise_id"] = enterprise_id
        return Origin(platform=PLATFORM, workspace_id=team_id, channel_id=channel_id, user_id=user_id, user_name=user_name, extra=extra)

    async def actor(self, user_id: str, *, team_id: str | None, check_workspace_admin: bool = False) -> Actor:
        """The user in their workspace, marked admin there if the bot's settings or (when it matters) Slack say so."""
        base = Actor(user_id=user_id, platform=PLATFORM, workspace_id=team_id)
        if self.service.is_admin(user_id):
            return base.model_copy(update={"is_admin": True})
        if not check_workspace_admin:
            return base
        try:
            user = (await (await self.client_for(team_id)).users_info(user=user_id))["user"]
        except (SlackApiError, NotInstalled) as exc:
            log.warning("users.info failed for %s: %s", user_id, slack_error(exc) if isinstance(exc, SlackApiError) else exc)
            return base
        return base.model_copy(update={"is_admin": bool(user.get("is_admin") or user.get("is_owner"))})
