"""A loopback Slack: the Web API methods the bot calls, plus a signed-request sender.

`SlackEmulator` is an aiohttp server on 127.0.0.1 (port 0) that answers what the real
slack_sdk `AsyncWebClient` sends (form, query or JSON arguments; Bearer token), records
every call, keeps messages and uploaded files (the bytes, through the upload URL that
files.getUploadURLExternal hands out, served by this same server), and can answer the
next call of a method with a 429 + Retry-After. It also plays Slack's side towards the
bot: slash commands, block actions, view submissions and events, signed with the v0
HMAC exactly as Slack signs them, sent over real HTTP to the bot's /slack/events.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

TEAM_ID = "T0VIDEO"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
SIGNING_SECRET = "test-signing-secret"
APP_ID = "A0VIDEOBOT"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    status: int
    at: float


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

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.base = ""
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._faults: list[tuple[str, int, str]] = []
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
        app.router.add_post("/response/{key}", self._response_url)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    def response_url(self, key: str = "r") -> str:
        return f"{self.base}/response/{key}"

    # --- test controls ----------------------------------------------------------------------

    def fail_next(self, method: str, status: int = 429, retry_after: str = "0") -> None:
        """The next call of `method` gets `status` (429: with Retry-After)."""
        self._faults.append((method, status, retry_after))

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
        for i, (name, status, retry_after) in enumerate(self._faults):
            if name == method:
                del self._faults[i]
                self._record(method, args, status)
                headers = {"Retry-After": retry_after} if status == 429 else {}
                return web.json_response({"ok": False, "error": "ratelimited" if status == 429 else "fatal_error"}, status=status, headers=headers)
        token = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if request.headers.get("Authorization") != f"Bearer {token}":
            self._record(method, args, 200)
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            self._record(method, args, 200)
            return web.json_response({"ok": False, "error": "unknown_method"})
        result = handler(args)
        self._record(method, args, 200)
        return web.json_response(result)

    def _record(self, method: str, args: dict[str, Any], status: int) -> None:
        self.calls.append(Call(method, args, status, time.monotonic()))
        self._changed.set()

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://videobot-test.slack.com/", "team": "Test", "user": "videobot",
                "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False}  # fmt: skip

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
        return {
            "token": "legacy", "team_id": TEAM_ID, "team_domain": "test", "channel_id": channel_id or self.channel_id,
            "channel_name": "general", "user_id": user_id, "user_name": user_id.lower(), "command": command, "text": text,
            "api_app_id": APP_ID, "response_url": self.response_url(f"cmd-{user_id}"), "trigger_id": f"trig.{next(self._ids)}",
        }  # fmt: skip

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if channel in self.outside:
            return {"ok": False, "error": "not_in_channel"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        message = {"type": "message", "ts": ts, "channel": channel, "user": BOT_USER_ID, "bot_id": BOT_ID,
                   "text": args.get("text", ""), "blocks": _blocks(args.get("blocks"))}  # fmt: skip
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
        self.messages[ts] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get(args.get("ts", ""))
        if message is None or message["channel"] != args.get("channel"):
            return {"ok": False, "error": "message_not_found"}
        blocks = _blocks(args.get("blocks"))
        for block in blocks:
            file_id = (block.get("slack_file") or {}).get("id")
            if block.get("type") == "image" and file_id not in self.files:
                return {"ok": False, "error": "invalid_blocks"}
        message.update(text=args.get("text", ""), blocks=blocks, edited=True)
        return {"ok": True, "channel": message["channel"], "ts": message["ts"], "text": message["text"]}

    def _m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.messages.pop(args.get("ts", ""), None) is None:
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts")}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        self.ephemerals.append({"channel": args.get("channel"), "user": args.get("user"), "text": args.get("text", "")})
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

    def _m_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        ts = args.get("ts", "")
        if ts not in self.messages:
            return {"ok": False, "error": "thread_not_found"}
        return {"ok": True, "messages": [self.messages[ts], *self.thread(ts)], "has_more": False}

    def _m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            length = int(args.get("length", ""))
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._ids):07d}"
        self.files[file_id] = {"id": file_id, "name": args.get("filename"), "length": length, "data": None,
                               "completed": False, "shares": {}}  # fmt: skip
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
            ts = self._next_ts()
            message = {"type": "message", "ts": ts, "channel": channel, "user": BOT_USER_ID, "bot_id": BOT_ID,
                       "text": args.get("initial_comment", ""), "files": [f["id"] for f in done], "blocks": []}  # fmt: skip
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
        return {"ok": True, "file": {k: v for k, v in file.items() if k != "data"}}

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
        file = self.files.get(request.match_info["file_id"])
        data = await request.read()
        self._record("upload", {"file_id": request.match_info["file_id"], "bytes": len(data)}, 200 if file else 404)
        if file is None:
            return web.Response(status=404, text="no such upload")
        file["data"] = data
        return web.Response(text=f"OK - {len(data)}")

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
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

    async def submit_view(self, url: str, view: dict[str, Any], values: dict[str, str], *, user_id: str = "U0ALICE") -> Sent:
        """Submit an opened modal with `values` by block_id (each block has one input)."""
        state: dict[str, Any] = {}
        for block in view.get("blocks", []):
            if block.get("type") == "input":
                action_id = block["element"]["action_id"]
                state[block["block_id"]] = {action_id: {"type": "plain_text_input", "value": values.get(block["block_id"])}}
        payload = {
            "type": "view_submission", "api_app_id": APP_ID, "token": "legacy", "trigger_id": f"trig.{next(self._ids)}",
            "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID}, "team": {"id": TEAM_ID, "domain": "test"},
            "view": {**view, "team_id": TEAM_ID, "state": {"values": state}, "hash": "h"},
        }  # fmt: skip
        return await self.send(url, "payload=" + urllib.parse.quote(json.dumps(payload)), "application/x-www-form-urlencoded")

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
    """Point the bot at the emulator in HTTP mode on an ephemeral loopback port."""
    values = {
        "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": emu.api_url,
        "SLACK_HTTP_HOST": "127.0.0.1", "SLACK_HTTP_PORT": "0", "SLACK_STATUS_INTERVAL_SECONDS": "0.2", **extra,
    }  # fmt: skip
    for key, value in values.items():
        monkeypatch.setenv(key, value)



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

    app = await open_app(load_settings())
    if register is not None:
        register(app)
    adapter = SlackAdapter(app)
    app.runner.deliverers[adapter.platform] = adapter.deliver
    await app.runner.start(resume=True)
    await adapter.start()
    return SlackBot(app, adapter)


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
