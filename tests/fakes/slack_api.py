"""A loopback Slack: the Web API methods the bot calls, plus a signed-request sender.

`SlackEmulator` is an aiohttp server on 127.0.0.1 (port 0) that answers what the real
slack_sdk `AsyncWebClient` sends (form, query or JSON arguments; Bearer token), records
every call, keeps messages (with their metadata) and uploaded files (the bytes, through the
upload URL that files.getUploadURLExternal hands out, served by this same server), reads
them back like Slack (conversations.history / replies with files in Slack's shape, paged by
cursor; files.list), and plays faults: the next call of a method answered 429 / 5xx, a
call carried out but its answer dropped or held back, a deleted or archived channel. It also plays Slack's side towards the
bot: slash commands, block actions, view submissions and events, signed with the v0
HMAC exactly as Slack signs them, sent over real HTTP to the bot's /slack/events.

Many workspaces: the default one (TEAM_ID, BOT_TOKEN) is always there; `add_team` adds another
and the OAuth v2 install puts the app in it (`/oauth/v2/authorize` approves at once and sends the
browser to the bot's redirect URL with a code; `oauth.v2.access` exchanges codes and, with
`rotation_seconds` set, refresh tokens: every token then expires and every refresh token is good
once). Each call is checked as Slack checks it: an unknown or revoked token is refused
(`invalid_auth`, `token_revoked`), an expired one answers `token_expired`, and a channel or
message of another workspace than the token's is not found. Every call records whose token it
carried (`Call.team`).
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
import mimetypes
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.loopback import serve
from slack_sdk.signature import SignatureVerifier

TEAM_ID = "T0VIDEO"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
SIGNING_SECRET = "test-signing-secret"
APP_ID = "A0VIDEOBOT"
CLIENT_ID = "1111.2222"
CLIENT_SECRET = "test-client-secret"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    status: int
    at: float
    #: The workspace whose token the call carried (None: no valid token, or none needed).
    team: str | None = None
    token: str | None = None
    #: The error of a call refused for its token (invalid_auth, token_expired, token_revoked).
    refused: str | None = None


@dataclass
class Team:
    """A workspace: its channels, and the app's bot user there."""

    id: str
    name: str
    bot_user_id: str
    bot_id: str
    channels: set[str] = field(default_factory=set)
    enterprise_id: str | None = None


@dataclass
class Token:
    team: str
    expires_at: float | None = None
    revoked: bool = False


@dataclass
class Sent:
    """What the bot answered to a request Slack sent it."""

    status: int
    body: str
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class SlackEmulator:
    channel_id: str = "C0GENERAL"
    calls: list[Call] = field(default_factory=list)
    #: Channel messages by ts (channel in the message), as Slack would show them.
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    ephemerals: list[dict[str, Any]] = field(default_factory=list)
    #: Posts to response_url, in order.
    responses: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    views: list[dict[str, Any]] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Channels the bot is not a member of (chat.postMessage answers not_in_channel).
    outside: set[str] = field(default_factory=set)
    #: Deleted channels (every call naming one answers channel_not_found) and archived ones.
    deleted: set[str] = field(default_factory=set)
    archived: set[str] = field(default_factory=set)
    #: Users who are not members of the channel (chat.postEphemeral to them answers user_not_in_channel).
    absent: set[str] = field(default_factory=set)
    #: When set, uploaded bytes are written here as they arrive (never held whole), not kept in memory.
    spool: Any = None

    def __post_init__(self) -> None:
        self.teams: dict[str, Team] = {TEAM_ID: Team(TEAM_ID, "Test", BOT_USER_ID, BOT_ID, {self.channel_id})}
        self.tokens: dict[str, Token] = {BOT_TOKEN: Token(TEAM_ID)}
        #: Refresh tokens not used yet (each is good once), by team.
        self.refresh_tokens: dict[str, str] = {}
        #: Authorization codes handed out and not exchanged yet: code -> (team, installer).
        self.codes: dict[str, tuple[str, str]] = {}
        #: Token rotation on: tokens issued from now on expire after this many seconds.
        self.rotation_seconds: float | None = None
        #: The app's Redirect URL (its OAuth settings), used when the authorize link names none.
        self.redirect_uri: str | None = None
        #: oauth.v2.access answers by grant type, and refresh tokens refused (a second use).
        self.grants: list[dict[str, Any]] = []
        #: A refresh grant takes this long (as a slow network would): a window for two refreshers to collide.
        self.refresh_delay = 0.0
        self._caller: Token | None = None
        self._runner: web.AppRunner | None = None
        self.base = ""
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._faults: list[tuple[str, int, str, bool]] = []
        #: Calls carried out whose answer is then dropped (connection closed) or held back.
        self._drops: list[str] = []
        self._holds: list[tuple[str, asyncio.Event]] = []
        self._changed = asyncio.Event()
        #: Used by `send` when set; otherwise one session per request.
        self.session: aiohttp.ClientSession | None = None
        #: Socket Mode: the bot's open WebSockets, and its acks by envelope id.
        self.sockets: list[web.WebSocketResponse] = []
        self.socket_acks: dict[str, dict[str, Any]] = {}

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{team_file}/{name}", self._download)
        app.router.add_post("/response/{key}", self._response_url)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/oauth/v2/authorize", self._authorize)
        self._runner, port = await serve(app, access_log=None)
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for _, release in self._holds:
            release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    def response_url(self, key: str = "r") -> str:
        return f"{self.base}/response/{key}"

    # --- test controls ----------------------------------------------------------------------

    def fail_next(self, method: str, status: int = 429, retry_after: str = "0", *, after: bool = False) -> None:
        """The next call of `method` gets `status` (429: with Retry-After); "upload": the raw upload of bytes.

        `after`: the call is carried out first, then answered with the error (Slack did it, said it failed).
        """
        self._faults.append((method, status, retry_after, after))

    def drop_next(self, method: str) -> None:
        """Carry out the next call of `method`, then close the connection without answering."""
        self._drops.append(method)

    def hold_next(self, method: str) -> asyncio.Event:
        """Carry out the next call of `method` but answer only once the returned event is set."""
        release = asyncio.Event()
        self._holds.append((method, release))
        return release

    def user_message(self, text: str, *, user: str = "U0ALICE", channel: str | None = None) -> str:
        """A message typed by a person (not the bot); returns its ts."""
        ts = self._next_ts()
        self.messages[ts] = {"type": "message", "ts": ts, "channel": channel or self.channel_id, "user": user, "text": _slack_escape(text)}
        return ts

    def user_file_message(
        self, data: bytes, name: str, text: str = "", *, user: str = "U0ALICE", thread_ts: str | None = None,
        external_url: str | None = None, url: str | None = None,
    ) -> str:
        """A person's message with an uploaded file (shared in the channel); returns its ts.
        `external_url`: an external file instead (a Google Drive or Dropbox link: `is_external`,
        its `url_private` the link); `url`: an uploaded file whose address Slack would not give
        (another host), for tests of what the bot sends where."""
        file_id = f"F{next(self._ids):07d}"
        ts = self._next_ts()
        self.files[file_id] = {"id": file_id, "name": name, "length": len(data), "data": data, "completed": True, "title": name,
                               "shares": {"public": {self.channel_id: [{"ts": ts}]}}, "created": int(time.time()), "user": user,
                               "external_url": external_url, "url": url}  # fmt: skip
        message = {"type": "message", "ts": ts, "channel": self.channel_id, "user": user, "text": _slack_escape(text), "files": [file_id]}
        if thread_ts:
            message["thread_ts"] = thread_ts
        self.messages[ts] = message
        return ts

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def thread(self, ts: str) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if m.get("thread_ts") == ts and m["ts"] != ts]

    def text_of(self, ts: str) -> str:
        """The message as a user reads it: its text and every text in its blocks."""
        message = self.messages[ts]
        return message.get("text", "") + "\n" + "\n".join(_block_texts(message.get("blocks") or []))

    async def wait_for(self, check: Callable[[], Any], timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {check}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), 0.05)
            except TimeoutError:
                pass

    # --- the Web API ------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _arguments(request)
        for i, (name, status, retry_after, after) in enumerate(self._faults):
            if name == method:
                del self._faults[i]
                handler = getattr(self, "_m_" + method.replace(".", "_"), None)
                if after and handler is not None:
                    handler(args)
                self._record(method, args, status)
                headers = {"Retry-After": retry_after} if status == 429 else {}
                return web.json_response({"ok": False, "error": "ratelimited" if status == 429 else "fatal_error"}, status=status, headers=headers)
        if method == "oauth.v2.access":
            if args.get("grant_type") == "refresh_token" and self.refresh_delay:
                await asyncio.sleep(self.refresh_delay)
            result = self._oauth_access(request, args)
            self._record(method, {k: v for k, v in args.items() if k != "client_secret"}, 200)
            return web.json_response(result)
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if method == "apps.connections.open":
            caller: Token | None = Token(TEAM_ID) if bearer == APP_TOKEN else None
            refusal = None if caller else "invalid_auth"
        else:
            caller = self.tokens.get(bearer)
            refusal = self._refusal(caller)
        if refusal is not None:
            self._record(method, args, 200, team=caller.team if caller else None, token=bearer, refused=refusal)
            return web.json_response({"ok": False, "error": refusal})
        assert caller is not None
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            self._record(method, args, 200, team=caller.team, token=bearer)
            return web.json_response({"ok": False, "error": "unknown_method"})
        channel = args.get("channel") or args.get("channel_id")
        self._caller = caller
        try:
            if channel in self.deleted or not self._visible(channel, caller.team):
                result = {"ok": False, "error": "channel_not_found"}
            else:
                result = handler(args)
        finally:
            self._caller = None
        self._record(method, args, 200, team=caller.team, token=bearer)
        if method in self._drops:
            self._drops.remove(method)
            assert request.transport is not None
            request.transport.close()  # done, but the caller never hears of it
            return web.Response(status=200)
        hold = next((h for h in self._holds if h[0] == method), None)
        if hold is not None:
            self._holds.remove(hold)
            await hold[1].wait()
        return web.json_response(result)

    def _record(
        self, method: str, args: dict[str, Any], status: int, *, team: str | None = None, token: str | None = None, refused: str | None = None
    ) -> None:
        self.calls.append(Call(method, args, status, time.monotonic(), team, token, refused))
        self._changed.set()

    # --- workspaces, tokens and the OAuth install ------------------------------------------

    def add_team(self, team_id: str, channel_id: str, *, name: str | None = None, enterprise_id: str | None = None) -> Team:
        """Another workspace (not installed yet), with one channel."""
        suffix = team_id[1:]
        team = Team(team_id, name or f"Team {suffix}", f"U0BOT{suffix}", f"B0BOT{suffix}", {channel_id}, enterprise_id)
        self.teams[team_id] = team
        return team

    def team_of_channel(self, channel: str) -> str | None:
        return next((t.id for t in self.teams.values() if channel in t.channels), None)

    def _visible(self, channel: Any, team: str) -> bool:
        """A channel of another workspace does not exist for this token (unknown channels: anyone's)."""
        if not isinstance(channel, str) or not channel:
            return True
        owner = self.team_of_channel(channel)
        return owner is None or owner == team

    def _refusal(self, token: Token | None) -> str | None:
        if token is None:
            return "invalid_auth"
        if token.revoked:
            return "token_revoked"
        if token.expires_at is not None and time.time() >= token.expires_at:
            return "token_expired"
        return None

    def bot_token_of(self, team_id: str) -> str | None:
        """The newest bot token issued for a workspace."""
        found = [t for t, info in self.tokens.items() if info.team == team_id and not info.revoked]
        return found[-1] if found else None

    def uninstall(self, team_id: str) -> None:
        """The app removed from the workspace: every token of it is revoked (Slack then sends app_uninstalled)."""
        for info in self.tokens.values():
            if info.team == team_id:
                info.revoked = True
        self.refresh_tokens = {r: t for r, t in self.refresh_tokens.items() if t != team_id}

    def _issue(self, team_id: str) -> dict[str, Any]:
        token = f"xoxb-{team_id}-{next(self._ids)}-{secrets.token_hex(6)}"
        if self.rotation_seconds is None:
            self.tokens[token] = Token(team_id)
            return {"access_token": token}
        token = "xoxe." + token
        self.tokens[token] = Token(team_id, expires_at=time.time() + self.rotation_seconds)
        refresh = f"xoxe-1-{team_id}-{secrets.token_hex(8)}"
        self.refresh_tokens[refresh] = team_id
        return {"access_token": token, "refresh_token": refresh, "expires_in": int(self.rotation_seconds)}

    async def _authorize(self, request: web.Request) -> web.Response:
        """The installer approves at once, in the workspace named by `team` (else the default one)."""
        query = request.query
        self._record("oauth/v2/authorize", dict(query), 200)
        if query.get("client_id") != CLIENT_ID:
            return web.Response(status=400, text="invalid client_id")
        team = query.get("team") or TEAM_ID
        if team not in self.teams:
            return web.Response(status=400, text="no such team")
        code = f"code-{team}-{secrets.token_hex(8)}"
        self.codes[code] = (team, query.get("installer") or "U0INSTALLER")
        target = query.get("redirect_uri") or self.redirect_uri
        if not target:
            return web.Response(status=400, text="no redirect_uri")
        params = {"code": code, "state": query.get("state", "")}
        raise web.HTTPFound(f"{target}?{urllib.parse.urlencode(params)}")

    def _oauth_access(self, request: web.Request, args: dict[str, Any]) -> dict[str, Any]:
        client_id, secret = args.get("client_id"), args.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if client_id != CLIENT_ID or secret != CLIENT_SECRET:
            return {"ok": False, "error": "invalid_client_id" if client_id != CLIENT_ID else "bad_client_secret"}
        grant = args.get("grant_type") or "authorization_code"
        if grant == "refresh_token":
            team_id = self.refresh_tokens.pop(str(args.get("refresh_token")), None)
            self.grants.append({"grant": grant, "team": team_id, "ok": team_id is not None})
            if team_id is None:
                return {"ok": False, "error": "invalid_refresh_token"}
            installer = None
        else:
            found = self.codes.pop(str(args.get("code")), None)
            self.grants.append({"grant": grant, "team": found[0] if found else None, "ok": found is not None})
            if found is None:
                return {"ok": False, "error": "invalid_code"}
            team_id, installer = found
        team = self.teams[team_id]
        answer: dict[str, Any] = {
            "ok": True, "app_id": APP_ID, "scope": "commands,chat:write,files:write,files:read,channels:history,groups:history,reactions:read,users:read",
            "token_type": "bot", "bot_user_id": team.bot_user_id, "team": {"id": team.id, "name": team.name},
            "enterprise": {"id": team.enterprise_id, "name": "Org"} if team.enterprise_id else None, "is_enterprise_install": False,
            **self._issue(team_id),
        }  # fmt: skip
        if installer:
            answer["authed_user"] = {"id": installer}
        return answer

    def _me(self) -> Team:
        """The app's bot user in the calling token's workspace."""
        return self.teams[self._caller.team if self._caller else TEAM_ID]

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        me = self._me()
        return {"ok": True, "url": "https://videobot-test.slack.com/", "team": me.name, "user": "videobot",
                "team_id": me.id, "user_id": me.bot_user_id, "bot_id": me.bot_id, "is_enterprise_install": False}  # fmt: skip

    def _m_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.base.replace("http://", "ws://") + "/socket"}

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {"host": "emulator"}})
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(message.data)
                if "envelope_id" in data:
                    self.socket_acks[data["envelope_id"]] = data
                    self._changed.set()
        if ws in self.sockets:
            self.sockets.remove(ws)
        return ws

    async def socket_send(self, kind: str, payload: dict[str, Any]) -> str:
        """Push one Socket Mode envelope to the bot; returns its envelope id (acked into socket_acks)."""
        envelope_id = f"env-{next(self._ids)}"
        await self.sockets[-1].send_json({"envelope_id": envelope_id, "type": kind, "payload": payload, "accepts_response_payload": kind != "events_api"})
        return envelope_id

    def command_form(self, command: str, text: str, *, user_id: str = "U0ALICE", channel_id: str | None = None) -> dict[str, str]:
        """A slash command's form (from the channel's workspace); the text escaped as Slack escapes what people type (&, <, >)."""
        text = _slack_escape(text)
        team_id = self.team_of_channel(channel_id or self.channel_id) or TEAM_ID
        return {
            "token": "legacy", "team_id": team_id, "team_domain": "test", "channel_id": channel_id or self.channel_id,
            "channel_name": "general", "user_id": user_id, "user_name": user_id.lower(), "command": command, "text": text,
            "api_app_id": APP_ID, "response_url": self.response_url(f"cmd-{user_id}"), "trigger_id": f"trig.{next(self._ids)}",
        }  # fmt: skip

    def dm_channel(self, user_id: str) -> str:
        """The app's DM with a user (App Home's Messages tab), where a post to the user id lands."""
        return "D" + user_id[1:]

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if channel[0] in "UW":
            channel = args["channel"] = self.dm_channel(channel)
        if channel in self.outside:
            return {"ok": False, "error": "not_in_channel"}
        if channel in self.archived:
            return {"ok": False, "error": "is_archived"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        metadata = _metadata(args.get("metadata"))
        if metadata is False:
            return {"ok": False, "error": "invalid_metadata_format"}
        ts = self._next_ts()
        me = self._me()
        message = {"type": "message", "ts": ts, "channel": channel, "user": me.bot_user_id, "bot_id": me.bot_id, "app_id": APP_ID,
                   "text": args.get("text", ""), "blocks": _blocks(args.get("blocks")), "team": me.id}  # fmt: skip
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
        if metadata:
            message["metadata"] = metadata
        self.messages[ts] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": self._shown(message, metadata=True)}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get(args.get("ts", ""))
        if message is None or message["channel"] != args.get("channel") or message.get("team", self._me().id) != self._me().id:
            return {"ok": False, "error": "message_not_found"}
        blocks = _blocks(args.get("blocks"))
        for block in blocks:
            file_id = (block.get("slack_file") or {}).get("id")
            if block.get("type") == "image" and file_id not in self.files:
                return {"ok": False, "error": "invalid_blocks"}
        metadata = _metadata(args.get("metadata"))
        if metadata is False:
            return {"ok": False, "error": "invalid_metadata_format"}
        if metadata:
            message["metadata"] = metadata  # without the argument Slack keeps what the message had
        message.update(text=args.get("text", ""), blocks=blocks, edited=True)
        return {"ok": True, "channel": message["channel"], "ts": message["ts"], "text": message["text"]}

    def _m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.messages.pop(args.get("ts", ""), None) is None:
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts")}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("user") in self.absent:
            return {"ok": False, "error": "user_not_in_channel"}
        self.ephemerals.append({"channel": args.get("channel"), "user": args.get("user"), "text": args.get("text", ""), "thread_ts": args.get("thread_ts")})
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        view = args.get("view")
        view = json.loads(view) if isinstance(view, str) else view
        if not args.get("trigger_id") or not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        view = {**view, "id": f"V{next(self._ids):05d}"}
        self.views.append(view)
        return {"ok": True, "view": view}

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = args.get("user", "")
        user = self.users.get(user_id, {})
        return {"ok": True, "user": {"id": user_id, "name": user_id.lower(), "is_admin": user.get("is_admin", False),
                                     "is_owner": user.get("is_owner", False)}}  # fmt: skip

    def _m_reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get(args.get("timestamp", ""))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.setdefault("reactions", []).append(args.get("name"))
        return {"ok": True}

    # Reading back: Slack's arguments (channel, ts, latest, oldest, inclusive, limit, cursor,
    # include_all_metadata) and answer shape; cursors are opaque "next_ts:" strings like Slack's.

    def _m_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel", "")
        if channel in self.outside:
            return {"ok": False, "error": "not_in_channel"}
        window = _Window.of(args, default_limit=100, max_limit=999)
        if window is None:
            return {"ok": False, "error": "invalid_arguments"}
        top = [m for m in self.messages.values() if m["channel"] == channel and m.get("thread_ts", m["ts"]) == m["ts"]]
        top.sort(key=lambda m: Decimal(m["ts"]), reverse=True)  # newest first
        if window.cursor is not None:
            top = [m for m in top if Decimal(m["ts"]) <= window.cursor]
        chosen = [m for m in top if window.holds(m["ts"])]
        page, rest = chosen[: window.limit], chosen[window.limit :]
        answer: dict[str, Any] = {"ok": True, "messages": [self._shown(m, metadata=window.metadata) for m in page],
                                  "has_more": bool(rest), "pin_count": 0, "channel_actions_ts": None, "channel_actions_count": 0}  # fmt: skip
        answer["response_metadata"] = {"next_cursor": _cursor(rest[0]["ts"]) if rest else ""}
        return answer

    def _m_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = args.get("channel", ""), args.get("ts", "")
        if not ts:
            return {"ok": False, "error": "invalid_arguments"}
        if channel in self.outside:
            return {"ok": False, "error": "not_in_channel"}
        message = self.messages.get(ts)
        if message is None or message["channel"] != channel:
            return {"ok": False, "error": "thread_not_found"}
        parent = self.messages.get(message.get("thread_ts", ts))  # a reply's ts names its thread
        if parent is None:
            return {"ok": False, "error": "thread_not_found"}
        window = _Window.of(args, default_limit=1000, max_limit=1000)
        if window is None:
            return {"ok": False, "error": "invalid_arguments"}
        replies = sorted(self.thread(parent["ts"]), key=lambda m: Decimal(m["ts"]))  # oldest first, after the parent
        if window.cursor is not None:
            replies = [m for m in replies if Decimal(m["ts"]) >= window.cursor]
        chosen = ([parent] if window.cursor is None else []) + [m for m in replies if window.holds(m["ts"])]
        page, rest = chosen[: window.limit], chosen[window.limit :]
        answer: dict[str, Any] = {"ok": True, "messages": [self._shown(m, metadata=window.metadata) for m in page], "has_more": bool(rest)}
        answer["response_metadata"] = {"next_cursor": _cursor(rest[0]["ts"]) if rest else ""}
        return answer

    def _shown(self, message: dict[str, Any], *, metadata: bool) -> dict[str, Any]:
        """A stored message as Slack's read methods show it: file objects, thread fields, metadata on request."""
        shown = {k: v for k, v in message.items() if k not in ("channel", "metadata", "files")}
        if message.get("files"):
            shown["files"] = [self._file_object(self.files[f]) for f in message["files"] if f in self.files]
            shown["upload"] = True
            shown["display_as_bot"] = False
        if metadata and message.get("metadata"):
            shown["metadata"] = message["metadata"]
        replies = self.thread(message["ts"]) if "thread_ts" not in message or message["thread_ts"] == message["ts"] else []
        if replies:
            shown.update(thread_ts=message["ts"], reply_count=len(replies), reply_users=sorted({r["user"] for r in replies}),
                         reply_users_count=len({r["user"] for r in replies}), latest_reply=max((r["ts"] for r in replies), key=Decimal))  # fmt: skip
        return shown

    def _file_object(self, file: dict[str, Any]) -> dict[str, Any]:
        """A file as Slack describes it in messages, files.info and files.list."""
        name = file.get("name") or file["id"]
        mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        filetype = name.rsplit(".", 1)[-1].lower() if "." in name else "binary"
        url = f"{self.base}/files-pri/{TEAM_ID}-{file['id']}/{urllib.parse.quote(name)}"
        shares = file.get("shares") or {}
        shown: dict[str, Any] = {
            "id": file["id"], "created": file["created"], "timestamp": file["created"], "name": name,
            "title": file.get("title") or name, "mimetype": mimetype, "filetype": filetype,
            "pretty_type": filetype.upper(), "user": file.get("user", BOT_USER_ID), "user_team": TEAM_ID,
            "editable": False, "size": file.get("length", 0), "mode": "hosted", "is_external": False,
            "external_type": "", "is_public": bool(shares.get("public")), "public_url_shared": False,
            "display_as_bot": False, "username": "", "url_private": url, "url_private_download": url + "?download=1",
            "permalink": f"https://videobot-test.slack.com/files/{BOT_USER_ID}/{file['id']}/{urllib.parse.quote(name)}",
            "is_starred": False, "has_rich_preview": False, "file_access": "visible", "alt_txt": file.get("alt_txt"),
            "shares": shares, "channels": sorted(shares.get("public", {})), "groups": sorted(shares.get("private", {})), "ims": [],
        }  # fmt: skip
        if file.get("external_url"):
            shown.update(is_external=True, external_type="gdrive", mode="external", url_private=file["external_url"])
            shown.pop("url_private_download")
        elif file.get("url"):
            shown.update(url_private=file["url"], url_private_download=file["url"])
        return shown

    def _m_files_list(self, args: dict[str, Any]) -> dict[str, Any]:
        """files.list: completed files, newest first, filtered by user, channel, ts_from/ts_to and types."""
        try:
            ts_from, ts_to = float(args.get("ts_from") or 0), float(args.get("ts_to") or "inf")
            count, page = int(args.get("count") or 100), int(args.get("page") or 1)
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        types = set(str(args.get("types") or "all").split(","))
        chosen = []
        for file in sorted(self.files.values(), key=lambda f: f["created"], reverse=True):
            shown = self._file_object(file)
            if not file["completed"] or not ts_from <= file["created"] <= ts_to:
                continue
            if args.get("user") and shown["user"] != args["user"]:
                continue
            if args.get("channel") and args["channel"] not in shown["channels"] + shown["groups"]:
                continue
            if "all" not in types and not ("images" in types and shown["mimetype"].startswith("image/")) and shown["filetype"] not in types:
                continue
            chosen.append(shown)
        pages = max(1, -(-len(chosen) // count))
        return {"ok": True, "files": chosen[(page - 1) * count : page * count],
                "paging": {"count": count, "total": len(chosen), "page": page, "pages": pages}}  # fmt: skip

    def _m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            length = int(args.get("length", ""))
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._ids):07d}"
        self.files[file_id] = {"id": file_id, "name": args.get("filename"), "length": length, "data": None, "completed": False,
                               "shares": {}, "created": int(time.time()), "user": self._me().bot_user_id, "alt_txt": args.get("alt_txt")}  # fmt: skip
        return {"ok": True, "upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        items = args.get("files")
        items = json.loads(items) if isinstance(items, str) else items
        done = []
        for item in items or []:
            file = self.files.get(item.get("id", ""))
            if file is None or file["data"] is None:
                return {"ok": False, "error": "file_not_found"}
            file.update(completed=True, title=item.get("title") or file["name"])
            done.append(file)
        channel = args.get("channel_id")
        if channel:
            if channel in self.outside:
                return {"ok": False, "error": "not_in_channel"}
            if channel in self.archived:
                return {"ok": False, "error": "is_archived"}
            ts = self._next_ts()
            me = self._me()
            message = {"type": "message", "ts": ts, "channel": channel, "user": me.bot_user_id, "bot_id": me.bot_id, "app_id": APP_ID,
                       "text": args.get("initial_comment", ""), "files": [f["id"] for f in done], "blocks": [], "team": me.id}  # fmt: skip
            if args.get("thread_ts"):
                message["thread_ts"] = args["thread_ts"]
            self.messages[ts] = message
            for file in done:
                # Like Slack, the answer does not carry the share yet; files.info does.
                file["shares"] = {"public": {channel: [{"ts": ts, "thread_ts": args.get("thread_ts")}]}}
        return {"ok": True, "files": [{"id": f["id"], "title": f["title"], "shares": {}} for f in done]}

    def _m_files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        file = self.files.get(args.get("file", ""))
        if file is None:
            return {"ok": False, "error": "file_not_found"}
        return {"ok": True, "file": self._file_object(file)}

    def _m_files_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        file = self.files.pop(args.get("file", ""), None)
        if file is None:
            return {"ok": False, "error": "file_not_found"}
        # Slack removes the file from every message; a message left with nothing goes away.
        for ts, message in list(self.messages.items()):
            if file["id"] in message.get("files", []):
                message["files"].remove(file["id"])
                if not message["files"]:
                    del self.messages[ts]
        return {"ok": True}

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        file = self.files.get(file_id)
        received, path = 0, None
        framing = {"content_length": request.headers.get("Content-Length"), "chunked": request.headers.get("Transfer-Encoding") == "chunked"}
        if self.spool is not None:
            path = self.spool / f"{file_id}.bin"
            with path.open("wb") as out:
                async for chunk in request.content.iter_chunked(1 << 16):
                    out.write(chunk)
                    received += len(chunk)
            data = None
        else:
            data = await request.read()
            received = len(data)
        fault = next((f for f in self._faults if f[0] == "upload"), None)
        if fault is not None:  # fail_next("upload", 500): the raw upload of the bytes fails
            self._faults.remove(fault)
            self._record("upload", {"file_id": file_id, "bytes": received, **framing}, fault[1])
            return web.Response(status=fault[1], text="upload failed")
        self._record("upload", {"file_id": file_id, "bytes": received, **framing}, 200 if file else 404)
        if file is None:
            return web.Response(status=404, text="no such upload")
        if received != file["length"]:
            return web.Response(status=400, text=f"expected {file['length']} bytes, got {received}")
        file["data"] = data if data is not None else b""
        file["path"] = path
        return web.Response(text=f"OK - {received}")

    async def _download(self, request: web.Request) -> web.Response:
        """url_private(_download): the file's bytes for a request with the bot token, else Slack's login page."""
        file_id = request.match_info["team_file"].split("-", 1)[-1]
        file = self.files.get(file_id)
        self._record("files-pri", {"file_id": file_id}, 200)
        if self._refusal(self.tokens.get(request.headers.get("Authorization", "").removeprefix("Bearer "))) or file is None or file.get("data") is None:
            return web.Response(text="<html>Sign in to Slack</html>", content_type="text/html")
        return web.Response(body=file["data"], content_type=mimetypes.guess_type(file["name"])[0] or "application/octet-stream")

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        for i, (name, status, _, _) in enumerate(self._faults):
            if name == "response_url":  # fail_next("response_url", 500): Slack's hook refused the answer
                del self._faults[i]
                self._record("response_url", body, status)
                return web.Response(status=status, text="internal_error")
        self.responses.append({"key": request.match_info["key"], **body})
        self._record("response_url", body, 200)
        return web.Response(text="ok")

    # --- Slack's side: signed requests to the bot -------------------------------------------

    async def send(self, url: str, body: str, content_type: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> Sent:
        ts = str(timestamp if timestamp is not None else int(time.time()))
        signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}
        started = time.perf_counter()
        if self.session is not None:  # shared (benchmarks): no per-request connection setup in the figures
            async with self.session.post(url, data=body.encode(), headers=headers) as resp:
                text = await resp.text()
            return Sent(resp.status, text, time.perf_counter() - started)
        async with aiohttp.ClientSession() as session, session.post(url, data=body.encode(), headers=headers) as resp:
            text = await resp.text()
        return Sent(resp.status, text, time.perf_counter() - started)

    async def slash(self, url: str, command: str, text: str, *, user_id: str = "U0ALICE", channel_id: str | None = None, **kw: Any) -> Sent:
        form = self.command_form(command, text, user_id=user_id, channel_id=channel_id)
        return await self.send(url, urllib.parse.urlencode(form), "application/x-www-form-urlencoded", **kw)

    async def click(self, url: str, message_ts: str, action_id: str, value: str, *, user_id: str = "U0ALICE") -> Sent:
        """A button press in a message, as a block_actions payload."""
        message = self.messages[message_ts]
        payload = {
            "type": "block_actions", "api_app_id": APP_ID, "token": "legacy",
            "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID}, "team": {"id": TEAM_ID, "domain": "test"},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": message["channel"], "is_ephemeral": False},
            "channel": {"id": message["channel"], "name": "general"}, "message": message,
            "trigger_id": f"trig.{next(self._ids)}", "response_url": self.response_url(f"act-{user_id}"),
            "actions": [{"type": "button", "action_id": action_id, "block_id": "actions", "value": value, "action_ts": str(time.time())}],
        }  # fmt: skip
        return await self.send(url, "payload=" + urllib.parse.quote(json.dumps(payload)), "application/x-www-form-urlencoded")

    async def select(self, url: str, message_ts: str, action_id: str, value: str, *, user_id: str = "U0ALICE") -> Sent:
        """An option picked in a message's static_select, as a block_actions payload (the option must be on offer)."""
        message = self.messages[message_ts]
        menus = [e for b in message.get("blocks") or [] if b.get("type") == "actions" for e in b["elements"]
                 if e.get("type") == "static_select" and e.get("action_id") == action_id]  # fmt: skip
        assert menus, f"no select {action_id} in message {message_ts}"
        option = next((o for o in menus[0]["options"] if o["value"] == value), None)
        assert option is not None, f"{value} is not an option of {action_id}"
        payload = {
            "type": "block_actions", "api_app_id": APP_ID, "token": "legacy",
            "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID}, "team": {"id": TEAM_ID, "domain": "test"},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": message["channel"], "is_ephemeral": False},
            "channel": {"id": message["channel"], "name": "general"}, "message": message,
            "trigger_id": f"trig.{next(self._ids)}", "response_url": self.response_url(f"act-{user_id}"),
            "actions": [{"type": "static_select", "action_id": action_id, "block_id": "actions", "selected_option": option,
                         "action_ts": str(time.time())}],
        }  # fmt: skip
        return await self.send(url, "payload=" + urllib.parse.quote(json.dumps(payload)), "application/x-www-form-urlencoded")

    async def click_ephemeral(self, url: str, response: dict[str, Any], action_id: str, value: str, *, user_id: str = "U0ALICE") -> Sent:
        """A button press in an ephemeral message (sent through a response_url): Slack sends no `message` for those."""
        payload = {
            "type": "block_actions", "api_app_id": APP_ID, "token": "legacy",
            "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID}, "team": {"id": TEAM_ID, "domain": "test"},
            "container": {"type": "message", "message_ts": self._next_ts(), "channel_id": self.channel_id, "is_ephemeral": True},
            "channel": {"id": self.channel_id, "name": "general"},
            "trigger_id": f"trig.{next(self._ids)}", "response_url": self.response_url(f"eph-{user_id}"),
            "actions": [{"type": "button", "action_id": action_id, "block_id": "offer_actions", "value": value, "action_ts": str(time.time())}],
        }  # fmt: skip
        return await self.send(url, "payload=" + urllib.parse.quote(json.dumps(payload)), "application/x-www-form-urlencoded")

    async def submit_view(self, url: str, view: dict[str, Any], values: dict[str, str], *, user_id: str = "U0ALICE") -> Sent:
        """Submit an opened modal with `values` by block_id (each block has one input; others keep their initial value)."""
        state: dict[str, Any] = {}
        for block in view.get("blocks", []):
            if block.get("type") == "input":
                action_id = block["element"]["action_id"]
                # A field the user did not touch submits what it showed (Slack sends its initial value).
                value = values[block["block_id"]] if block["block_id"] in values else block["element"].get("initial_value")
                state[block["block_id"]] = {action_id: {"type": "plain_text_input", "value": value}}
        payload = {
            "type": "view_submission", "api_app_id": APP_ID, "token": "legacy", "trigger_id": f"trig.{next(self._ids)}",
            "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID}, "team": {"id": TEAM_ID, "domain": "test"},
            "view": {**view, "team_id": TEAM_ID, "state": {"values": state}, "hash": "h"},
        }  # fmt: skip
        return await self.send(url, "payload=" + urllib.parse.quote(json.dumps(payload)), "application/x-www-form-urlencoded")

    async def shortcut(self, url: str, message_ts: str, callback_id: str, *, user_id: str = "U0ALICE") -> Sent:
        """A message shortcut on a message, as a message_action payload (the message as Slack shows it)."""
        message = self.messages[message_ts]
        payload = {
            "type": "message_action", "token": "legacy", "action_ts": str(time.time()), "callback_id": callback_id,
            "team": {"id": TEAM_ID, "domain": "test"}, "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID, "name": user_id.lower()},
            "channel": {"id": message["channel"], "name": "general"}, "is_enterprise_install": False, "api_app_id": APP_ID,
            "trigger_id": f"trig.{next(self._ids)}", "response_url": self.response_url(f"sc-{user_id}"), "message_ts": message_ts,
            "message": self._shown(message, metadata=False),
        }  # fmt: skip
        return await self.send(url, "payload=" + urllib.parse.quote(json.dumps(payload)), "application/x-www-form-urlencoded")

    async def event(self, url: str, team_id: str, event: dict[str, Any]) -> Sent:
        """An Events API callback from a workspace (app_uninstalled, tokens_revoked, ...)."""
        body = {
            "token": "legacy", "team_id": team_id, "api_app_id": APP_ID, "type": "event_callback", "event_id": f"Ev{next(self._ids):06d}",
            "event_time": int(time.time()), "event": {**event, "event_ts": str(time.time())},
            "authorizations": [{"team_id": team_id, "user_id": self.teams[team_id].bot_user_id, "is_bot": True}],
        }  # fmt: skip
        return await self.send(url, json.dumps(body), "application/json")

    async def react(self, url: str, message_ts: str, reaction: str, *, user_id: str = "U0ALICE") -> Sent:
        message = self.messages.get(message_ts, {"channel": self.channel_id, "user": user_id})
        body = {
            "token": "legacy", "team_id": TEAM_ID, "api_app_id": APP_ID, "type": "event_callback",
            "event_id": f"Ev{next(self._ids):06d}", "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
            "event": {"type": "reaction_added", "user": user_id, "reaction": reaction, "item_user": message.get("user"),
                      "item": {"type": "message", "channel": message["channel"], "ts": message_ts}, "event_ts": str(time.time())},
        }  # fmt: skip
        return await self.send(url, json.dumps(body), "application/json")


async def _arguments(request: web.Request) -> dict[str, Any]:
    """slack_sdk sends arguments as a query string, a form or JSON, depending on the method."""
    args: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            args.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    return args


def _slack_escape(text: str) -> str:
    """Slack sends what people typed with &, < and > escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _metadata(value: Any) -> dict[str, Any] | None | bool:
    """chat.postMessage / chat.update `metadata`: {event_type, event_payload}; False when malformed."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return False
    if not isinstance(value, dict) or not isinstance(value.get("event_type"), str) or not isinstance(value.get("event_payload"), dict):
        return False
    return {"event_type": value["event_type"], "event_payload": value["event_payload"]}


def _cursor(ts: str) -> str:
    return base64.b64encode(f"next_ts:{ts}".encode()).decode()


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true")


@dataclass
class _Window:
    """The latest / oldest / inclusive / limit / cursor arguments of the conversation read methods."""

    latest: Decimal | None
    oldest: Decimal
    inclusive: bool
    limit: int
    cursor: Decimal | None
    metadata: bool

    @classmethod
    def of(cls, args: dict[str, Any], *, default_limit: int, max_limit: int) -> _Window | None:
        try:
            latest = Decimal(str(args["latest"])) if args.get("latest") not in (None, "") else None
            oldest = Decimal(str(args.get("oldest") or "0"))
            limit = min(max(int(args.get("limit") or default_limit), 1), max_limit)
            cursor = None
            if args.get("cursor"):
                prefix, _, ts = base64.b64decode(str(args["cursor"])).decode().partition(":")
                if prefix != "next_ts":
                    return None
                cursor = Decimal(ts)
        except (ValueError, InvalidOperation, UnicodeDecodeError):
            return None
        return cls(latest, oldest, _truthy(args.get("inclusive")), limit, cursor, _truthy(args.get("include_all_metadata")))

    def holds(self, ts: str) -> bool:
        value = Decimal(ts)
        if self.inclusive:
            return value >= self.oldest and (self.latest is None or value <= self.latest)
        return value > self.oldest and (self.latest is None or value < self.latest)


def _blocks(blocks: Any) -> list[dict[str, Any]]:
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return list(blocks or [])


def _block_texts(blocks: list[dict[str, Any]]) -> list[str]:
    texts: list[str] = []
    for block in blocks:
        text = block.get("text")
        if isinstance(text, dict):
            texts.append(text.get("text", ""))
        for element in block.get("elements", []):
            inner = element.get("text")
            texts.append(inner.get("text", "") if isinstance(inner, dict) else str(inner or ""))
    return texts


def buttons_of(message: dict[str, Any]) -> list[tuple[str, str]]:
    """(action_id, value) of every button in a message."""
    return [(e["action_id"], e.get("value", "")) for b in message.get("blocks") or [] if b.get("type") == "actions"
            for e in b["elements"] if e.get("type") == "button"]  # fmt: skip


def slack_env(monkeypatch: Any, emu: SlackEmulator, **extra: str) -> None:
    """Point the bot at the emulator in HTTP mode on an ephemeral loopback port.

    The chat.update budget is Slack's 50 but per 5 s instead of per minute (an update every
    0.1 s, not 1.2 s): the same rule, quicker tests. Tests of the budget itself set their own.
    """
    values = {
        "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": emu.api_url,
        "SLACK_HTTP_HOST": "127.0.0.1", "SLACK_HTTP_PORT": "0", "SLACK_UPDATE_BUDGET": "50", "SLACK_UPDATE_WINDOW_SECONDS": "5", **extra,
    }  # fmt: skip
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def slack_oauth_env(monkeypatch: Any, emu: SlackEmulator, **extra: str) -> None:
    """As slack_env, for a distributed app: no bot token, the OAuth client and state secret instead."""
    slack_env(monkeypatch, emu, SLACK_CLIENT_ID=CLIENT_ID, SLACK_CLIENT_SECRET=CLIENT_SECRET, SLACK_STATE_SECRET="test-state-secret", **extra)
    monkeypatch.delenv("SLACK_BOT_TOKEN")


def oauth_env(emu: SlackEmulator) -> dict[str, str]:
    """The same for a process's environment (gateways and workers)."""
    return {"SLACK_CLIENT_ID": CLIENT_ID, "SLACK_CLIENT_SECRET": CLIENT_SECRET, "SLACK_STATE_SECRET": "test-state-secret"}


async def install(emu: SlackEmulator, install_url: str, team_id: str) -> Sent:
    """A person installs the app in a workspace with a browser: the bot's install page, its "Add to
    Slack" link (Slack approves at once), then the redirect back to the bot with the state cookie."""
    import re

    async with aiohttp.ClientSession() as session:
        async with session.get(install_url) as page:
            assert page.status == 200, await page.text()
            html = await page.text()
            cookie = page.headers.get("Set-Cookie", "").split(";", 1)[0]
        link = re.search(r'href="([^"]+/oauth/v2/authorize[^"]*)"', html)
        assert link is not None, html
        authorize = link.group(1).replace("&amp;", "&") + "&" + urllib.parse.urlencode({"team": team_id})
        async with session.get(authorize, allow_redirects=False) as approved:
            assert approved.status == 302, await approved.text()
            redirect = approved.headers["Location"]
        started = time.perf_counter()
        async with session.get(redirect, headers={"Cookie": cookie}, allow_redirects=False) as done:
            return Sent(done.status, await done.text(), time.perf_counter() - started)



@dataclass
class SlackBot:
    app: Any
    adapter: Any

    @property
    def url(self) -> str:
        return str(self.adapter.http_url)

    async def close(self) -> None:
        await self.adapter.stop()
        await self.app.close()


async def start_slack_bot(*, register: Any = None) -> SlackBot:
    """`videobot run` in miniature: settings from the env, deliverer registered, runner resumed, app serving."""
    from bot.adapters.slack.app import SlackAdapter
    from bot.app import open_app
    from bot.config import load_settings
    from bot.heap import HeapKeeper

    app = await open_app(load_settings())
    if register is not None:
        register(app)
    adapter = SlackAdapter(app)
    app.runner.deliverers[adapter.platform] = adapter.deliver
    await app.runner.start(resume=True)
    await adapter.start()
    HeapKeeper().settle()  # as `videobot run` does once started (bot/heap.py)
    return SlackBot(app, adapter)


async def job_of_message(app: Any, ts: str, timeout: float = 10) -> Any:
    """The job the store finds for a message ts, waiting for the store write (never for luck)."""
    deadline = time.monotonic() + timeout
    while True:
        job = await app.service.find_by_message("slack", ts)
        if job is not None:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"no job found for message {ts} after {timeout}s")
        await asyncio.sleep(0.02)


# --- fixtures (import them into a test module to use them) ---------------------------------

import pytest  # noqa: E402


@pytest.fixture
async def slack() -> Any:
    emulator = SlackEmulator()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()
