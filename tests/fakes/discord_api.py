"""A loopback Discord: the REST subset and the gateway the bot uses, after the v10 spec
(/work/shared/specs/discord-rest-subset.json), so the REAL discord.py client runs against it.

It records every REST call, keeps messages with their files (attachment bytes), answers
429s and 5xx on demand (also "created, then the answer was lost"), deduplicates message
creates by `nonce` + `enforce_nonce` as Discord documents it, deletes and locks channels,
expires interaction tokens, and plays the user's side: slash commands, button clicks, modal
submits and reactions are dispatched over the gateway.
"""
from __future__ import annotations

from tests.fakes.loopback import serve
import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1420070400000
# Permission bits the emulator uses.
VIEW_CHANNEL, SEND_MESSAGES, ADD_REACTIONS, ATTACH_FILES, READ_MESSAGE_HISTORY = 0x400, 0x800, 0x40, 0x8000, 0x10000
MANAGE_MESSAGES = 0x2000
#: What the bot may do in the test channel unless a test says otherwise.
BOT_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | ADD_REACTIONS | ATTACH_FILES | READ_MESSAGE_HISTORY
API_PREFIX = "/api/v10"
EPHEMERAL = 64
# Exactly this: discord.py's json_or_text checks the header for equality.
JSON = "application/json"


def iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), tz=timezone.utc).isoformat()


@dataclass
class Call:
    method: str
    path: str
    json: Any = None
    files: dict[str, bytes] = field(default_factory=dict)
    status: int = 200
    at: float = field(default_factory=time.monotonic)


@dataclass
class Fault:
    """The next `count` calls matching `method` and `pattern` are answered with `status`."""

    method: str
    pattern: re.Pattern[str]
    count: int
    status: int = 429
    retry_after: float = 0.05
    #: Do the call first (e.g. create the message), then answer with the error: the answer
    #: was lost on the way back, the caller cannot tell whether it happened.
    after: bool = False


@dataclass
class Interaction:
    id: str
    token: str
    created: float
    channel_id: str
    user_id: str
    payload: dict[str, Any]
    #: The interaction callback body (defer, modal, message...) once the bot answered.
    callback: dict[str, Any] | None = None
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    answered_at: float | None = None
    original_id: str | None = None
    followups: list[str] = field(default_factory=list)


class DiscordEmulator:
    """Start with `await emu.start()`; `emu.api_base` and `emu.gateway_url` go into settings."""

    #: Discord checks an enforced nonce for uniqueness "in the past few minutes".
    NONCE_WINDOW = 5 * 60

    def __init__(self, *, attachment_size_limit: int = 10 * 1024 * 1024, token_ttl: float = 15 * 60) -> None:
        #: When set, GET /users/@me refuses any other bot token with 401 (as Discord does).
        self.bot_token: str | None = None
        self.application_id = self.snowflake()
        self.bot_user_id = self.application_id
        self.guild_id = self.snowflake()
        self.channel_id = self.snowflake()
        #: A role of the guild besides @everyone (for `/settings set roles`).
        self.role_id = self.snowflake()
        self.attachment_size_limit = attachment_size_limit
        #: Upload cap of bot-token posts (the guild's: 10 MiB without boosts).
        self.channel_size_limit = 10 * 1024 * 1024
        #: `app_permissions` in interactions: what the bot may do in the channel.
        self.app_permissions = BOT_PERMISSIONS
        self.token_ttl = token_ttl
        self.calls: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.interactions: dict[str, Interaction] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}  # "global" or guild id → commands
        self.dm_channels: dict[str, str] = {}  # user id → channel id
        self.reactions: list[tuple[str, str]] = []  # (message id, emoji) added by the bot
        self.downloads: list[str] = []  # attachment ids fetched from the "CDN"
        self.identified = asyncio.Event()
        self.sessions = 0
        self._fail: list[Fault] = []
        #: (author id, nonce) → (message id, created at) for creates with enforce_nonce.
        self.nonces: dict[tuple[str, str], tuple[str, float]] = {}
        self.nonce_window = self.NONCE_WINDOW
        self.deleted_channels: set[str] = set()
        #: channel id → (status, code) for every bot-token call there (missing access/permissions).
        self.locked_channels: dict[str, tuple[int, int]] = {}
        #: channel ids whose history (GET messages) the bot may not read (no Read Message History).
        self.history_forbidden: set[str] = set()
        #: A server where the app is installed only by a user (user install): the bot is not a
        #: member, so every bot-token call into its channel answers Missing Access.
        self.guest_guild_id = self.snowflake()
        self.guest_channel_id = self.snowflake()
        self.locked_channels[self.guest_channel_id] = (403, 50001)
        self._sockets: list[web.WebSocketResponse] = []
        #: The `shard` of every IDENTIFY ([id, count]; None: unsharded), in order.
        self.identifies: list[list[int] | None] = []
        #: Which shard each socket identified as (sharded gateways only get their guilds' events).
        self._shard_of: dict[int, list[int]] = {}
        self._seq = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()
        self.base_url = ""

    # --- life cycle -------------------------------------------------------------------------

    _counter = itertools.count()

    @classmethod
    def snowflake(cls) -> str:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((ms << 22) | (next(cls._counter) & 0x3FFFFF))

    async def start(self) -> None:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{id}/{name}", self._attachment)
        app.router.add_route("*", API_PREFIX + "/{path:.*}", self._rest)
        self._runner, port = await serve(app, access_log=None)
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + "/gateway"

    # --- test controls ----------------------------------------------------------------------

    def fail_next(
        self, method: str, path_regex: str, *, count: int = 1, retry_after: float = 0.05, status: int = 429, after: bool = False
    ) -> None:
        """The next `count` matching calls get `status`: a 429 with `retry_after` (discord.py
        must wait and retry) or a 5xx. `after=True`: the call takes effect, then the error is
        answered (the response was lost)."""
        self._fail.append(Fault(method.upper(), re.compile(path_regex), count, status, retry_after, after))

    def delete_channel(self, channel_id: str) -> None:
        """The channel is gone: every call about it answers 404 Unknown Channel (10003)."""
        self.deleted_channels.add(channel_id)

    def lock_channel(self, channel_id: str, *, code: int = 50013) -> None:
        """The bot lost access (50001) or permission (50013) there: bot-token calls get 403."""
        self.locked_channels[channel_id] = (403, code)

    def channel_messages(self, channel_id: str) -> list[dict[str, Any]]:
        """Every message in a channel, oldest first (what a user scrolling it would see)."""
        return sorted((m for m in self.messages.values() if m["channel_id"] == channel_id), key=lambda m: int(m["id"]))

    def calls_to(self, method: str, path_regex: str) -> list[Call]:
        pattern = re.compile(path_regex)
        return [c for c in self.calls if c.method == method and pattern.search(c.path)]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> Any:
        """Wait until `predicate()` is truthy (checked after every REST call); return its value."""
        async def check() -> Any:
            async with self._changed:
                while not (value := predicate()):
                    await self._changed.wait()
                return value

        return await asyncio.wait_for(check(), timeout)

    def user_payload(self, user_id: str, *, bot: bool = False) -> dict[str, Any]:
        return {"id": user_id, "username": f"user{user_id[-4:]}", "discriminator": "0", "global_name": None, "avatar": None, "bot": bot}

    def member_payload(self, user_id: str, *, permissions: int = 0, roles: list[str] | None = None) -> dict[str, Any]:
        # Emulator gotcha: discord.py reads member.flags unconditionally.
        return {
            "user": self.user_payload(user_id), "roles": list(roles or []), "joined_at": iso(), "deaf": False, "mute": False,
            "flags": 0, "nick": None, "avatar": None, "pending": False, "permissions": str(permissions),
        }  # fmt: skip

    async def slash(
        self, name: str, options: dict[str, Any] | None = None, *, user_id: str = "1001", permissions: int = 0,
        attachments: dict[str, dict[str, Any]] | None = None, roles: list[str] | None = None, guest: bool = False,
    ) -> Interaction:
        """The user runs `/name` with `options`; attachment options name a key of `attachments`."""
        opts = []
        for key, value in (options or {}).items():
            kind = 11 if attachments and key in attachments else 5 if isinstance(value, bool) else 4 if isinstance(value, int) else 3
            opts.append({"name": key, "type": kind, "value": value})
        data: dict[str, Any] = {"id": self.snowflake(), "name": name, "type": 1, "options": opts}
        if attachments:
            data["resolved"] = {"attachments": {a["id"]: a for a in attachments.values()}}
        return await self._dispatch_interaction(2, data, user_id=user_id, permissions=permissions, roles=roles, guest=guest)

    async def autocomplete(self, name: str, option: str, value: str, *, user_id: str = "1001", others: dict[str, Any] | None = None) -> Interaction:
        """The user types `value` into `option` (other options already filled: `others`)."""
        options = [{"name": k, "type": 4 if isinstance(v, int) else 3, "value": v} for k, v in (others or {}).items()]
        options.append({"name": option, "type": 3, "value": value, "focused": True})
        data = {"id": self.snowflake(), "name": name, "type": 1, "options": options}
        return await self._dispatch_interaction(4, data, user_id=user_id)

    async def click(self, message_id: str, custom_id: str, *, user_id: str = "1001", permissions: int = 0) -> Interaction:
        message = self.messages[message_id]
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._dispatch_interaction(3, data, user_id=user_id, permissions=permissions, message=message)

    async def select(self, message_id: str, custom_id: str, values: list[str], *, user_id: str = "1001") -> Interaction:
        """The user picks `values` in a string select of the message (they must be among its options)."""
        message = self.messages[message_id]
        menus = [c for row in message["components"] for c in row.get("components", []) if c.get("custom_id") == custom_id and c.get("type") == 3]
        assert menus, f"no select {custom_id} in message {message_id}"
        offered = {o["value"] for o in menus[0].get("options", [])}
        assert set(values) <= offered, f"{values} not among the options {sorted(offered)}"
        data = {"custom_id": custom_id, "component_type": 3, "values": values}
        return await self._dispatch_interaction(3, data, user_id=user_id, message=message)

    async def submit_modal(self, opened_by: Interaction, values: dict[str, str], *, user_id: str = "1001") -> Interaction:
        """The user fills the modal that `opened_by` opened; `values` are keyed by field label."""
        assert opened_by.callback and opened_by.callback["type"] == 9, "no modal was opened"
        modal = opened_by.callback["data"]
        rows = []
        for row in modal["components"]:
            inner = row.get("components") or [row.get("component")]
            rows.append({"type": 1, "components": [{"type": 4, "custom_id": c["custom_id"], "value": values.get(c.get("label", ""), "")} for c in inner if c]})
        data = {"custom_id": modal["custom_id"], "components": rows}
        return await self._dispatch_interaction(5, data, user_id=user_id, message=opened_by.payload.get("message"))

    async def react(self, message_id: str, emoji: str, *, user_id: str = "1001") -> None:
        message = self.messages[message_id]
        await self._dispatch("MESSAGE_REACTION_ADD", {
            "user_id": user_id, "channel_id": message["channel_id"], "message_id": message_id, "guild_id": self.guild_id,
            "member": self.member_payload(user_id), "emoji": {"id": None, "name": emoji}, "burst": False, "type": 0,
            "message_author_id": message["author"]["id"],
        })  # fmt: skip

    def add_user_attachment(self, filename: str, data: bytes, content_type: str | None) -> dict[str, Any]:
        """A file a user attached to a slash command (resolved.attachments)."""
        att_id = self.snowflake()
        self.files[att_id] = data
        url = f"{self.base_url}/attachments/{att_id}/{filename}"
        payload = {"id": att_id, "filename": filename, "size": len(data), "url": url, "proxy_url": url}
        if content_type:
            payload["content_type"] = content_type
        return payload

    def attachment_bytes(self, attachment: dict[str, Any]) -> bytes:
        return self.files[attachment["id"]]

    # --- gateway ----------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}))
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                if frame["op"] == 1:
                    await ws.send_str(json.dumps({"op": 11, "d": None}))
                elif frame["op"] in (2, 6):  # IDENTIFY, or RESUME: start a fresh session either way
                    self.sessions += 1
                    shard = (frame.get("d") or {}).get("shard") if frame["op"] == 2 else None
                    self.identifies.append(shard)
                    if shard:
                        self._shard_of[id(ws)] = list(shard)
                    if not self._serves_guild(ws):
                        # Like Discord: a shard only hears about the guilds that map to it.
                        await self._send(ws, "READY", {
                            "v": 10, "user": self.user_payload(self.bot_user_id, bot=True), "guilds": [],
                            "session_id": f"session-{self.sessions}", "resume_gateway_url": self.gateway_url,
                            "application": {"id": self.application_id, "flags": 0}, "private_channels": [], "relationships": [],
                            "shard": shard,
                        })  # fmt: skip
                        continue
                    ready = {
                        "v": 10, "user": self.user_payload(self.bot_user_id, bot=True), "guilds": [{"id": self.guild_id, "unavailable": True}],
                        "session_id": f"session-{self.sessions}", "resume_gateway_url": self.gateway_url,
                        "application": {"id": self.application_id, "flags": 0}, "private_channels": [], "relationships": [],
                    }  # fmt: skip
                    if shard:
                        ready["shard"] = shard  # Discord echoes a sharded session's [id, count]
                    await self._send(ws, "READY", ready)
                    await self._send(ws, "GUILD_CREATE", self._guild())
                    self.identified.set()
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            self._shard_of.pop(id(ws), None)
        return ws

    def _serves_guild(self, ws: web.WebSocketResponse) -> bool:
        """Whether this socket's shard is the guild's: (guild_id >> 22) % shard count (Discord's rule)."""
        shard = self._shard_of.get(id(ws))
        return shard is None or (int(self.guild_id) >> 22) % shard[1] == shard[0]

    async def _send(self, ws: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        await ws.send_str(json.dumps({"op": 0, "t": event, "s": next(self._seq), "d": data}))

    async def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        assert self._sockets, "the bot is not connected to the gateway"
        for ws in list(self._sockets):
            if self._serves_guild(ws):  # every event here is the one guild's
                await self._send(ws, event, data)

    def _guild(self) -> dict[str, Any]:
        return {
            "id": self.guild_id, "name": "Test guild", "icon": None, "owner_id": "1", "unavailable": False, "large": False,
            "member_count": 2, "features": [], "premium_tier": 0, "premium_subscription_count": 0, "mfa_level": 0,
            "verification_level": 0, "default_message_notifications": 0, "explicit_content_filter": 0, "nsfw_level": 0,
            "afk_timeout": 300, "preferred_locale": "en-US", "system_channel_flags": 0, "joined_at": iso(),
            "roles": [{"id": self.guild_id, "name": "@everyone", "color": 0, "hoist": False, "position": 0,
                       "permissions": str(0x800 | 0x8000 | 0x40 | 0x400), "managed": False, "mentionable": False, "flags": 0},
                      {"id": self.role_id, "name": "creators", "color": 0, "hoist": False, "position": 1,
                       "permissions": "0", "managed": False, "mentionable": False, "flags": 0}],
            "emojis": [], "stickers": [], "members": [], "voice_states": [], "presences": [], "threads": [],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
            "channels": [self._channel()],
        }  # fmt: skip

    def _channel(self) -> dict[str, Any]:
        return {"id": self.channel_id, "type": 0, "guild_id": self.guild_id, "name": "videos", "position": 0,
                "permission_overwrites": [], "nsfw": False, "topic": None, "rate_limit_per_user": 0, "parent_id": None}  # fmt: skip

    async def _dispatch_interaction(
        self, kind: int, data: dict[str, Any], *, user_id: str, permissions: int = 0, message: dict[str, Any] | None = None,
        roles: list[str] | None = None, guest: bool = False,
    ) -> Interaction:
        """`guest`: through the user's install, in the server where the bot is not a member (as Discord
        sends it: that server's ids, the user as the only authorizing owner, and the permissions of
        the interaction's webhook, which may well include Send Messages)."""
        interaction_id = self.snowflake()
        token = f"itok-{interaction_id}"
        payload: dict[str, Any] = {
            "id": interaction_id, "application_id": self.application_id, "type": kind, "data": data, "token": token,
            "version": 1, "guild_id": self.guild_id, "guild": {"id": self.guild_id, "locale": "en-US", "features": []},
            "channel_id": self.channel_id, "channel": self._channel(), "member": self.member_payload(user_id, permissions=permissions, roles=roles),
            "app_permissions": str(self.app_permissions), "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "authorizing_integration_owners": {"0": self.guild_id}, "context": 0,
            "attachment_size_limit": self.attachment_size_limit,
        }  # fmt: skip
        if guest:
            channel = {**self._channel(), "id": self.guest_channel_id, "guild_id": self.guest_guild_id, "name": "elsewhere"}
            payload.update(guild_id=self.guest_guild_id, guild={"id": self.guest_guild_id, "locale": "en-US", "features": []},
                           channel_id=self.guest_channel_id, channel=channel, authorizing_integration_owners={"1": user_id},
                           app_permissions=str(0x800 | 0x8000 | 0x4000 | 0x20000 | 0x40000))  # fmt: skip
        if message is not None:
            payload["message"] = message  # with its components: discord.py matches clicks against them
        interaction = Interaction(interaction_id, token, time.time(), payload["channel_id"], user_id, payload)
        self.interactions[token] = interaction
        await self._dispatch("INTERACTION_CREATE", payload)
        return interaction

    # --- REST -------------------------------------------------------------------------------

    async def _attachment(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["id"])
        self.downloads.append(request.match_info["id"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body, files = await self._read_body(request)
        call = Call(request.method, path, body, files)
        self.calls.append(call)
        if self.bot_token is not None and path == "/users/@me" and request.headers.get("Authorization") != f"Bot {self.bot_token}":
            call.status = 401  # what Discord answers a bad bot token (login, `videobot doctor`)
            return self._json({"message": "401: Unauthorized", "code": 0}, 401)
        try:
            fault = next((f for f in self._fail if f.method == request.method and f.pattern.search(path) and f.count > 0), None)
            if fault is not None:
                fault.count -= 1
                if fault.after:
                    self._route(request.method, path, body, files, request.query)
                call.status = fault.status
                return self._fault(fault)
            status, payload = self._route(request.method, path, body, files, request.query)
            call.status = status
            if status == 204:
                return web.Response(status=204)
            return self._json(payload, status)
        finally:
            async with self._changed:
                self._changed.notify_all()

    def _fault(self, fault: Fault) -> web.Response:
        if fault.status == 429:
            return self._json({"message": "You are being rate limited.", "retry_after": fault.retry_after, "global": False}, 429, {
                "Via": "1.1 google", "Retry-After": str(fault.retry_after), "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset-After": str(fault.retry_after), "X-RateLimit-Bucket": "emulated", "X-RateLimit-Scope": "user",
            })  # fmt: skip
        return self._json({"message": f"{fault.status}: Server Error", "code": 0}, fault.status)

    @staticmethod
    def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(body=json.dumps(payload).encode(), status=status, headers={"Content-Type": JSON, **(headers or {})})

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, dict[str, bytes]]:
        if request.content_type.startswith("multipart/"):
            body: Any = None
            files: dict[str, bytes] = {}
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":  # type: ignore[union-attr]
                    body = json.loads(await part.text())  # type: ignore[union-attr]
                else:
                    files[part.name or ""] = (bytes(await part.read()), part.filename)  # type: ignore[union-attr,assignment]
            return body, files
        raw = await request.read()
        return (json.loads(raw) if raw else None), {}

    def _route(self, method: str, path: str, body: Any, files: dict[str, Any], query: Any) -> tuple[int, Any]:
        app = self.application_id
        if path == "/users/@me" and method == "GET":
            return 200, self.user_payload(self.bot_user_id, bot=True)
        if path == "/oauth2/applications/@me":
            return 200, {"id": app, "name": "videobot", "icon": None, "description": "", "bot_public": True, "bot_require_code_grant": False,
                         "verify_key": "0" * 64, "flags": 0, "owner": self.user_payload("1"), "team": None, "summary": "", "rpc_origins": []}  # fmt: skip
        if path in ("/gateway", "/gateway/bot"):
            return 200, {"url": self.gateway_url, "shards": 1, "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}}
        if m := re.fullmatch(rf"/applications/{app}(?:/guilds/(\d+))?/commands", path):
            scope = m.group(1) or "global"
            if method == "PUT":
                self.commands[scope] = [{**c, "id": self.snowflake(), "application_id": app, "version": "1", "default_member_permissions": None, "type": c.get("type", 1)} for c in body]
            return 200, self.commands.get(scope, [])
        if m := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", path):
            return self._callback(m.group(2), body, files, query)
        if m := re.fullmatch(rf"/webhooks/{app}/([^/]+)(?:/messages/([^/]+))?", path):
            return self._webhook(method, m.group(1), m.group(2), body, files)
        if path == "/users/@me/channels" and method == "POST":
            user_id = body["recipient_id"]
            channel_id = self.dm_channels.setdefault(str(user_id), self.snowflake())
            return 200, {"id": channel_id, "type": 1, "recipients": [self.user_payload(str(user_id))], "last_message_id": None}
        if m := re.match(r"/channels/(\d+)", path):
            if m.group(1) in self.deleted_channels:
                return 404, {"message": "Unknown Channel", "code": 10003}
            if m.group(1) in self.locked_channels:
                status, code = self.locked_channels[m.group(1)]
                return status, {"message": "Missing Access" if code == 50001 else "Missing Permissions", "code": code}
        if m := re.fullmatch(r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me", path):
            from urllib.parse import unquote

            self.reactions.append((m.group(2), unquote(m.group(3))))
            return 204, None
        if m := re.fullmatch(r"/channels/(\d+)/messages(?:/(\d+))?", path):
            return self._channel_message(method, m.group(1), m.group(2), body, files, query)
        if m := re.fullmatch(r"/channels/(\d+)", path):
            if m.group(1) == self.channel_id:
                return 200, self._channel()
            return 200, {"id": m.group(1), "type": 1, "recipients": [], "last_message_id": None}
        return 404, {"message": f"Unknown route {method} {path}", "code": 0}

    def _token(self, token: str) -> Interaction | None:
        interaction = self.interactions.get(token)
        if interaction is None or time.time() - interaction.created > self.token_ttl:
            return None
        return interaction

    def _callback(self, token: str, body: dict[str, Any], files: dict[str, Any], query: Any) -> tuple[int, Any]:
        interaction = self._token(token)
        if interaction is None:
            return 404, {"message": "Unknown interaction", "code": 10062}
        if interaction.callback is not None:
            return 400, {"message": "Interaction has already been acknowledged.", "code": 40060}
        interaction.callback = body
        interaction.answered_at = time.time()
        kind = body["type"]
        message = None
        if kind in (4, 5):  # message, or deferred "thinking" message: the original response
            data = body.get("data") or {}
            message = self._new_message(interaction.channel_id, data, files, webhook=True, loading=kind == 5)
            interaction.original_id = message["id"]
        elif kind in (6, 7) and interaction.payload.get("message"):
            message = self.messages[interaction.payload["message"]["id"]]
            if kind == 7:
                self._apply_edit(message, body.get("data") or {}, files)
        interaction.answered.set()
        if query.get("with_response") in ("true", "True", "1"):
            resource: dict[str, Any] = {"type": kind}
            if message is not None:
                resource["message"] = message
            return 200, {"interaction": {"id": interaction.id, "type": interaction.payload["type"], "response_message_id": message and message["id"],
                                         "response_message_loading": kind == 5, "response_message_ephemeral": False}, "resource": resource}  # fmt: skip
        return 204, None

    def _webhook(self, method: str, token: str, message_id: str | None, body: Any, files: dict[str, Any]) -> tuple[int, Any]:
        interaction = self._token(token)
        if interaction is None:
            return 401, {"message": "Invalid Webhook Token", "code": 50027}
        if interaction.channel_id in self.deleted_channels:
            return 404, {"message": "Unknown Channel", "code": 10003}
        if message_id is None:
            if method != "POST":
                return 405, {"message": "405: Method Not Allowed", "code": 0}
            status = self._check_size(files)
            if status:
                return status
            message = self._new_message(interaction.channel_id, body or {}, files, webhook=True)
            interaction.followups.append(message["id"])
            return 200, message
        if message_id == "@original":
            message_id = interaction.original_id
        message = self.messages.get(message_id or "")
        if message is None:
            return 404, {"message": "Unknown Message", "code": 10008}
        if method == "GET":
            return 200, message
        if method == "PATCH":
            status = self._check_size(files)
            if status:
                return status
            self._apply_edit(message, body or {}, files)
            return 200, message
        if method == "DELETE":
            self.messages.pop(message["id"], None)
            return 204, None
        return 405, {"message": "405: Method Not Allowed", "code": 0}

    def _channel_message(self, method: str, channel_id: str, message_id: str | None, body: Any, files: dict[str, Any], query: Any) -> tuple[int, Any]:
        if message_id is None:
            if method != "POST":
                return self._list_messages(channel_id, query)
            status = self._check_size(files, limit=self.channel_size_limit)
            if status:
                return status
            return self._create_message(channel_id, body or {}, files)
        message = self.messages.get(message_id)
        if message is None or message["channel_id"] != channel_id:
            return 404, {"message": "Unknown Message", "code": 10008}
        if method == "GET":
            return 200, message
        if method == "PATCH":
            status = self._check_size(files, limit=self.channel_size_limit)
            if status:
                return status
            self._apply_edit(message, body or {}, files)
            return 200, message
        if method == "DELETE":
            self.messages.pop(message_id, None)
            return 204, None
        return 405, {"message": "405: Method Not Allowed", "code": 0}

    def _create_message(self, channel_id: str, body: dict[str, Any], files: dict[str, Any]) -> tuple[int, Any]:
        """Create Message. With `nonce` and `enforce_nonce: true`, a nonce the same author used in
        the past few minutes returns that message and creates nothing (a deleted one: 404)."""
        nonce = body.get("nonce")
        key = (self.bot_user_id, str(nonce)) if nonce is not None and body.get("enforce_nonce") else None
        if key is not None and key in self.nonces:
            message_id, created = self.nonces[key]
            if time.time() - created <= self.nonce_window:
                if message_id not in self.messages:
                    return 404, {"message": "Unknown Message", "code": 10008}
                return 200, {**self.messages[message_id], "nonce": str(nonce)}
        message = self._new_message(channel_id, body, files)
        if key is not None:
            self.nonces[key] = (message["id"], time.time())
        # The nonce comes back in the create response only; fetched messages do not carry it.
        return 200, ({**message, "nonce": str(nonce)} if nonce is not None else message)

    def _list_messages(self, channel_id: str, query: Any) -> tuple[int, Any]:
        """Get Channel Messages: newest first; `before`, `after` or `around` a message id; `limit` 1-100."""
        if channel_id in self.history_forbidden:
            return 403, {"message": "Missing Access", "code": 50001}
        limit = max(1, min(100, int(query.get("limit", 50))))
        found = [m for m in self.channel_messages(channel_id) if not m["flags"] & EPHEMERAL]  # only their user sees those
        if "after" in query:
            found = [m for m in found if int(m["id"]) > int(query["after"])][:limit]
        elif "before" in query:
            found = [m for m in found if int(m["id"]) < int(query["before"])][-limit:]
        elif "around" in query:
            pivot = int(query["around"])
            older = [m for m in found if int(m["id"]) <= pivot][-((limit + 1) // 2):]
            newer = [m for m in found if int(m["id"]) > pivot][: limit // 2]
            found = older + newer
        else:
            found = found[-limit:]
        return 200, list(reversed(found))

    def _check_size(self, files: dict[str, Any], *, limit: int | None = None) -> tuple[int, Any] | None:
        cap = limit if limit is not None else self.attachment_size_limit
        for data, _name in files.values():
            if len(data) > cap:
                return 413, {"message": "Request entity too large", "code": 40005}
        return None

    def _new_message(self, channel_id: str, data: dict[str, Any], files: dict[str, Any], *, webhook: bool = False, loading: bool = False) -> dict[str, Any]:
        message_id = self.snowflake()
        message: dict[str, Any] = {
            "id": message_id, "channel_id": channel_id, "author": self.user_payload(self.bot_user_id, bot=True),
            "content": "", "timestamp": iso(), "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mentions": [], "mention_roles": [], "attachments": [], "embeds": [], "pinned": False, "type": 0,
            "flags": (128 if loading else 0) | (int(data.get("flags") or 0) & EPHEMERAL), "components": [],
        }  # fmt: skip
        reference = data.get("message_reference")
        if reference:
            message["message_reference"] = {"message_id": str(reference["message_id"]), "channel_id": channel_id}
        if channel_id == self.channel_id:
            message["guild_id"] = self.guild_id
        if webhook:
            message["webhook_id"] = self.application_id
            message["application_id"] = self.application_id
        self.messages[message_id] = message
        self._apply_edit(message, data, files, new=True)
        return message

    def _apply_edit(self, message: dict[str, Any], data: dict[str, Any], files: dict[str, Any], *, new: bool = False) -> None:
        for key in ("content", "embeds", "components"):
            if key in data:
                message[key] = data[key] if data[key] is not None else ([] if key != "content" else "")
        if not new:
            message["edited_timestamp"] = iso()
            message["flags"] = message["flags"] & ~128
        if "attachments" in data or files:
            kept = {str(a["id"]) for a in data.get("attachments", []) if str(a.get("id")) in {x["id"] for x in message["attachments"]}}
            attachments = [a for a in message["attachments"] if a["id"] in kept] if "attachments" in data else list(message["attachments"])
            for index, (raw, filename) in enumerate(files.get(f"files[{i}]") for i in range(len(files))):
                att_id = self.snowflake()
                self.files[att_id] = raw
                url = f"{self.base_url}/attachments/{att_id}/{filename}"
                attachments.append({"id": att_id, "filename": filename, "size": len(raw), "url": url, "proxy_url": url,
                                    "content_type": "video/mp4" if filename.endswith(".mp4") else "image/jpeg"})  # fmt: skip
            message["attachments"] = attachments


# --- the bot under test, wired like `videobot run` ------------------------------------------


@dataclass
class DiscordBot:
    """The real core and the real discord.py client, pointed at an emulator."""

    app: Any
    adapter: Any

    async def close(self) -> None:
        await self.adapter.stop()
        await self.app.close()


def discord_env(monkeypatch: Any, emu: DiscordEmulator, **overrides: str) -> None:
    """DISCORD_* settings for the emulator; set them BEFORE `load_settings()`."""
    values = {
        "DISCORD_TOKEN": "test-bot-token",
        "DISCORD_API_BASE_URL": emu.api_base,
        "DISCORD_GATEWAY_URL": emu.gateway_url,
        "DISCORD_GUILD_IDS": emu.guild_id,
        # 5 status edits per 0.25 s per channel and per interaction: Discord's rule, 20 times quicker.
        "DISCORD_STATUS_EDIT_WINDOW_SECONDS": "0.25",
        "DISCORD_GUILD_READY_TIMEOUT": "0.2",
        **overrides,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)


async def start_bot(*, register: Any = None) -> DiscordBot:
    """`videobot run` in miniature: deliverer registered, runner resumed, client connected."""
    from bot.adapters.discord_bot.client import DiscordAdapter
    from bot.app import open_app
    from bot.heap import HeapKeeper
    from bot.config import load_settings

    app = await open_app(load_settings())
    if register is not None:
        register(app)
    adapter = DiscordAdapter(app)
    app.runner.deliverers[adapter.platform] = adapter.deliver
    await app.runner.start(resume=True)
    await adapter.start()
    HeapKeeper().settle()  # as `videobot run` does once started (bot/heap.py)
    return DiscordBot(app, adapter)


async def job_of(bot: DiscordBot, interaction: Interaction, timeout: float = 10.0) -> Any:
    """The job whose status message is this interaction's response (once the bot stored it)."""
    await asyncio.wait_for(interaction.answered.wait(), timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = await bot.app.service.find_by_message("discord", interaction.original_id or "")
        if job is not None:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"no job for the status message of interaction {interaction.id}")


def reset_discord_endpoints() -> None:
    """Route.BASE and the gateway are process-wide in discord.py: put them back after a test."""
    from bot.adapters.discord_bot.endpoints import apply_endpoints
    from bot.config import DiscordSettings

    apply_endpoints(DiscordSettings(api_base_url=None, gateway_url=None))


# --- fixtures (import them into a test module to use them) ---------------------------------

import pytest  # noqa: E402


@pytest.fixture
async def emu() -> Any:
    emulator = DiscordEmulator()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()
        reset_discord_endpoints()


def as_read(content: str) -> str:
    """A message's content as a Discord user reads it: each markdown escape shown as the character
    it escapes, an escaped mention's zero-width space gone."""
    return re.sub(r"\\([^\w\s]|_)", r"\1", content).replace("@\u200b", "@")


def followup_with_file(emu: DiscordEmulator, token: str) -> dict[str, Any] | None:
    """The first follow-up of that interaction that carries a file."""
    for message_id in emu.interactions[token].followups:
        message = emu.messages.get(message_id)
        if message and message["attachments"]:
            return message
    return None


def result_post(emu: DiscordEmulator, job_id: str) -> dict[str, Any] | None:
    """The job's result as a user sees it: the post carrying its file (or, when no file could be
    attached, its result buttons), whether the bot token or the interaction posted it."""
    for message in emu.channel_messages(emu.channel_id):
        files = {a["filename"].rsplit(".", 1)[0] for a in message["attachments"]}
        buttons = {c.get("custom_id", "") for row in message["components"] for c in row.get("components", [])}
        if job_id in files or any(b.startswith("vb:") and b.endswith(f":{job_id}") for b in buttons):
            return message
    return None


def ephemerals(emu: DiscordEmulator, token: str) -> list[dict[str, Any]]:
    """Ephemeral follow-ups of an interaction (only its user sees them)."""
    return [m for m in (emu.messages.get(i) for i in emu.interactions[token].followups) if m and m["flags"] & EPHEMERAL]


def buttons_of(message: dict[str, Any]) -> list[str]:
    """The custom ids of a message's buttons, in order."""
    return [c["custom_id"] for row in message["components"] for c in row.get("components", [])]


def channel_posts(emu: DiscordEmulator, channel_id: str, *, with_file: bool = False) -> list[dict[str, Any]]:
    """Messages the bot posted with its own token in a channel (not through an interaction)."""
    return [m for m in emu.messages.values() if m["channel_id"] == channel_id and "webhook_id" not in m and (m["attachments"] or not with_file)]
