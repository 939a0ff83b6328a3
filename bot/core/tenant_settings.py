"""Settings a tenant's admins change in chat, and what applies to one caller.

Resolution, most specific first: the user's own defaults (only the keys users may set),
the channel's values, the tenant's values, then the environment (`VIDEOBOT_*`). Every
value says where it came from, so `/settings` can show why a limit applies.

The operator's values are ceilings: a limit (budgets, the longest clip, the largest size, the
confirm threshold, the allowed pipelines and models, the moderation mode, the cooldown) set in
chat can only be stricter than the environment's. Asking to loosen one is refused with the
ceiling; a value stored before the operator tightened it is clamped when it is read.
"""
from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.config import CoreSettings
from bot.core.errors import NotAllowed
from bot.core.models import Actor, Origin
from bot.core.sizes import normalise_size
from providers.base import parse_size
from providers.errors import InvalidRequest
from storage.contract import Store

SCOPES = ("tenant", "channel", "user")


def _float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"'{raw}' is not a number.") from None
    if value < 0:
        raise InvalidRequest("The value cannot be negative.")
    return value


def _int(raw: str) -> int:
    value = _float(raw)
    if value != int(value) or value < 1:
        raise InvalidRequest(f"'{raw}' is not a whole number of 1 or more.")
    return int(value)


def _names(raw: str) -> list[str]:
    return [n.strip() for n in raw.replace(" ", ",").split(",") if n.strip()]


def _size(raw: str) -> str:
    size = normalise_size(raw).lower()  # a ratio (16:9) as the size it means
    parse_size(size)
    return size


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in options:
            raise InvalidRequest(f"Choose one of: {', '.join(options)}.")
        return raw.lower()

    return parse


#: Moderation modes from the most lenient to the strictest (auto and openai both ask the service).
MODERATION_RANK = {"off": 0, "blocklist": 1, "auto": 2, "openai": 2}


def _pixels(size: str) -> int:
    w, h = parse_size(size)
    return w * h


def _stricter(direction: str, chat: Any, ceiling: Any) -> bool:
    """Is `chat` at least as strict as the operator's `ceiling` (for a key of that `direction`)?"""
    if ceiling is None or ceiling == [] or chat is None:
        return True
    if direction == "max":  # a smaller number is stricter
        return float(chat) <= float(ceiling)
    if direction == "min":  # a larger number is stricter (cooldown)
        return float(chat) >= float(ceiling)
    if direction == "pixels":
        return _pixels(chat) <= _pixels(ceiling)
    if direction == "subset":  # an allow-list: only names the operator allows
        return chat != [] and set(chat) <= set(ceiling)
    if direction == "rank":
        return MODERATION_RANK.get(chat, 0) >= MODERATION_RANK.get(ceiling, 0)
    return True


@dataclass(frozen=True)
class Key:
    name: str
    parse: Callable[[str], Any]
    help: str
    #: May a user set it for themselves (`/settings me ...`)?
    personal: bool = False
    #: How the operator's value bounds it: "max", "min", "pixels", "subset", "rank"; "" for none.
    ceiling: str = ""
    #: The environment variable the operator sets it with (for the refusal's text).
    env: str = ""


KEYS: dict[str, Key] = {k.name: k for k in (
    Key("pipelines", _names, "pipelines allowed here (comma-separated; empty: all)", ceiling="subset", env="VIDEOBOT_ALLOWED_PIPELINES"),
    Key("models", _names, "models allowed with --model (empty: any priced model)", ceiling="subset", env="VIDEOBOT_ALLOWED_MODELS"),
    Key("default_pipeline", str, "pipeline when a command names none", personal=True),
    Key("seconds", _int, "default clip length", personal=True),
    Key("size", _size, "default size WxH", personal=True),
    Key("takes", _int, "versions made of each prompt by default (1-4, at most VIDEOBOT_MAX_TAKES)", personal=True),
    Key("max_seconds", _int, "longest clip allowed", ceiling="max", env="VIDEOBOT_MAX_SECONDS"),
    Key("max_size", _size, "largest WxH allowed (by pixel count)", ceiling="pixels", env="VIDEOBOT_MAX_SIZE"),
    Key("user_budget_usd", _float, "daily budget per user", ceiling="max", env="VIDEOBOT_DAILY_BUDGET_USER_USD"),
    Key("tenant_budget_usd", _float, "daily budget for the whole workspace or server", ceiling="max", env="VIDEOBOT_DAILY_BUDGET_WORKSPACE_USD"),
    Key("confirm_above_usd", _float, "jobs above this wait for a Confirm", ceiling="max", env="VIDEOBOT_CONFIRM_ABOVE_USD"),
    Key("cooldown_seconds", _float, "seconds between one user's paid commands", ceiling="min", env="VIDEOBOT_COOLDOWN_SECONDS"),
    Key("channels", _names, "channel ids where the bot answers (empty: everywhere)"),
    Key("roles", _names, "Discord role ids allowed to generate (empty: everyone)"),
    Key("reuse", _choice("channel", "tenant", "owner"), "who may re-roll/remix others' jobs: same channel, anywhere here, or owner only"),
    Key("moderation", _choice("auto", "openai", "blocklist", "off"), "moderation mode (only stricter than the operator's)", ceiling="rank", env="VIDEOBOT_MODERATION"),
    Key("blocklist", _names, "words or phrases refused here"),
)}  # fmt: skip


@dataclass(frozen=True)
class Value:
    value: Any
    #: "user", "channel", "tenant", "env" or "default".
    source: str
    #: The operator's value bounding a chat-set one (shown beside it), when there is one.
    ceiling: Any = None


class Effective:
    """What applies to one caller, key by key, with where each value came from."""

    def __init__(self, values: dict[str, Value]) -> None:
        self._values = values

    def get(self, key: str, default: Any = None) -> Any:
        found = self._values.get(key)
        return default if found is None else found.value

    def source(self, key: str) -> str:
        found = self._values.get(key)
        return found.source if found else "default"

    def text(self) -> str:
        lines = []
        for name, key in KEYS.items():
            value = self._values.get(name)
            shown = "—" if value is None or value.value in (None, [], "") else _show(value.value)
            where = f" ({value.source})" if value is not None and value.value not in (None, [], "") else ""
            if value is not None and value.ceiling not in (None, [], "") and value.source != "env":
                where += f" · ceiling {_show(value.ceiling)} (operator, {key.env})"
            lines.append(f"{name}: {shown}{where}  · {key.help}")
        return "\n".join(lines)


def _show(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


class TenantSettings:
    def __init__(self, store: Store, env: CoreSettings) -> None:
        self.store = store
        self.env = env
        #: A tenant's settings read under way, shared by whoever asks while it is: a burst of 500
        #: commands in one server made 500 reads in a row on one connection (p99 190 ms).
        self._reading: dict[tuple[str, str | None], asyncio.Future[list[tuple[str, str, str, Any]]]] = {}

    def _read_done(self, key: tuple[str, str | None], done: asyncio.Future[Any]) -> None:
        if self._reading.get(key) is done:
            del self._reading[key]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone (a failed read raises in each of theirs)

    async def _rows(self, platform: str, workspace_id: str | None) -> list[tuple[str, str, str, Any]]:
        key = (platform, workspace_id)
        reading = self._reading.get(key)
        if reading is None:
            reading = self._reading[key] = asyncio.ensure_future(self.store.settings_rows(platform, workspace_id))
            reading.add_done_callback(lambda done: self._read_done(key, done))
        rows = await asyncio.shield(reading)
        # Each caller its own values: a list setting (channels, roles, blocklist) may end up in a job's state.
        return [(scope, scope_id, name, copy.deepcopy(value)) for scope, scope_id, name, value in rows]

    def _env_values(self) -> dict[str, Value]:
        env = self.env
        out: dict[str, Value] = {}
        for name, value in (
            ("default_pipeline", env.default_pipeline or None),
            ("user_budget_usd", env.daily_budget_user_usd),
            ("tenant_budget_usd", env.daily_budget_workspace_usd),
            ("confirm_above_usd", env.confirm_above_usd),
            ("cooldown_seconds", env.cooldown_seconds or None),
            ("moderation", env.moderation.lower()),
            ("reuse", "channel"),
            ("max_seconds", env.max_seconds),
            ("max_size", env.max_size),
            ("pipelines", env.allowed_pipeline_list or None),
            ("models", env.allowed_model_list or None),
        ):
            if value is not None:
                out[name] = Value(value, "env")
        return out

    async def effective(self, origin: Origin) -> Effective:
        values = self._env_values()
        if origin.platform in ("cli", "console"):
            return Effective(values)
        rows = await self._rows(origin.platform, origin.workspace_id)
        by_scope: dict[str, dict[str, Any]] = {scope: {} for scope in SCOPES}
        for scope, scope_id, key, value in rows:
            if scope == "tenant" or (scope == "channel" and scope_id == origin.channel_id) or (scope == "user" and scope_id == origin.user_id):
                by_scope[scope][key] = value
        ceilings = {k: v.value for k, v in values.items() if KEYS.get(k) is not None and KEYS[k].ceiling}
        for scope in SCOPES:  # later scopes are more specific and win, within the operator's ceilings
            for key, value in by_scope[scope].items():
                spec = KEYS.get(key)
                if spec is None or (scope == "user" and not spec.personal):
                    continue
                ceiling = ceilings.get(key)
                if not _stricter(spec.ceiling, value, ceiling):
                    # Stored before the operator tightened the ceiling: the ceiling holds.
                    values[key] = Value(_clamp(spec.ceiling, value, ceiling), "env", ceiling)
                    continue
                values[key] = Value(value, scope, ceiling)
        return Effective(values)

    def ceiling(self, key: str) -> Any:
        """The operator's value for a key that chat settings may only tighten (None: no ceiling)."""
        spec = KEYS.get(key)
        if spec is None or not spec.ceiling:
            return None
        found = self._env_values().get(key)
        return None if found is None else found.value

    async def set(self, origin: Origin, actor: Actor, scope: str, key: str, raw: str | None) -> str:
        """Change one value; tenant and channel values need an admin of this tenant."""
        if origin.platform in ("cli", "console"):
            raise InvalidRequest("Settings are per workspace or server; the operator uses VIDEOBOT_* settings.")
        if key not in KEYS:
            raise InvalidRequest(f"No setting '{key}'. Settings: {', '.join(KEYS)}.")
        spec = KEYS[key]
        if scope == "user":
            if not spec.personal:
                raise NotAllowed(f"'{key}' is set by admins; you can set: {', '.join(k for k, v in KEYS.items() if v.personal)}.")
            scope_id = origin.user_id
        else:
            if not actor.is_admin:
                raise NotAllowed("Only an admin of this workspace or server can change its settings.")
            scope_id = origin.channel_id or "" if scope == "channel" else ""
        value = None if raw is None or raw.strip() == "" else spec.parse(raw.strip())
        ceiling = self.ceiling(key)
        if value is not None and not _stricter(spec.ceiling, value, ceiling):
            raise NotAllowed(
                f"{key} here can only be stricter than the operator's {_show(ceiling)} ({spec.env}, set by whoever runs the bot). "
                f"{_tighter_hint(spec.ceiling, ceiling)}"
            )
        await self.store.put_setting(origin.platform, origin.workspace_id, scope, scope_id, key, value, by=actor.user_id)
        self._reading.pop((origin.platform, origin.workspace_id), None)  # a read begun before this write is not shared on
        where = {"tenant": "here", "channel": "in this channel", "user": "for you"}[scope]
        return f"{key} {where}: {'back to the default' if value is None else _show(value)}."


def _clamp(direction: str, value: Any, ceiling: Any) -> Any:
    if direction == "subset":
        kept = [v for v in value if v in ceiling]
        return kept or list(ceiling)
    return ceiling


def _tighter_hint(direction: str, ceiling: Any) -> str:
    if direction == "max":
        return f"Choose {_show(ceiling)} or less."
    if direction == "min":
        return f"Choose {_show(ceiling)} or more."
    if direction == "pixels":
        return f"Choose {_show(ceiling)} or smaller."
    if direction == "subset":
        return f"Choose among: {_show(ceiling)}."
    if direction == "rank":
        return "Choose " + " or ".join(m for m, r in MODERATION_RANK.items() if r >= MODERATION_RANK.get(str(ceiling), 0)) + "."
    return ""
