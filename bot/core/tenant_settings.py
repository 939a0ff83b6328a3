"""Settings a tenant's admins change in chat, and what applies to one caller.

Resolution, most specific first: the user's own defaults (only the keys users may set),
the channel's values, the tenant's values, then the environment (`VIDEOBOT_*`). Every
value says where it came from, so `/settings` can show why a limit applies.
"""
from __future__ import annotations

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


@dataclass(frozen=True)
class Key:
    name: str
    parse: Callable[[str], Any]
    help: str
    #: May a user set it for themselves (`/settings me ...`)?
    personal: bool = False


KEYS: dict[str, Key] = {k.name: k for k in (
    Key("pipelines", _names, "pipelines allowed here (comma-separated; empty: all)"),
    Key("models", _names, "models allowed with --model (empty: any priced model)"),
    Key("default_pipeline", str, "pipeline when a command names none", personal=True),
    Key("seconds", _int, "default clip length", personal=True),
    Key("size", _size, "default size WxH", personal=True),
    Key("max_seconds", _int, "longest clip allowed"),
    Key("max_size", _size, "largest WxH allowed (by pixel count)"),
    Key("user_budget_usd", _float, "daily budget per user"),
    Key("tenant_budget_usd", _float, "daily budget for the whole workspace or server"),
    Key("confirm_above_usd", _float, "jobs above this wait for a Confirm"),
    Key("cooldown_seconds", _float, "seconds between one user's paid commands"),
    Key("channels", _names, "channel ids where the bot answers (empty: everywhere)"),
    Key("roles", _names, "Discord role ids allowed to generate (empty: everyone)"),
    Key("reuse", _choice("channel", "tenant", "owner"), "who may re-roll/remix others' jobs: same channel, anywhere here, or owner only"),
    Key("moderation", _choice("auto", "openai", "blocklist", "off"), "moderation mode"),
    Key("blocklist", _names, "words or phrases refused here"),
)}  # fmt: skip


@dataclass(frozen=True)
class Value:
    value: Any
    #: "user", "channel", "tenant", "env" or "default".
    source: str


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
            lines.append(f"{name}: {shown}{where}  · {key.help}")
        return "\n".join(lines)


def _show(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


class TenantSettings:
    def __init__(self, store: Store, env: CoreSettings) -> None:
        self.store = store
        self.env = env

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
        ):
            if value is not None:
                out[name] = Value(value, "env")
        return out

    async def effective(self, origin: Origin) -> Effective:
        values = self._env_values()
        if origin.platform in ("cli", "console"):
            return Effective(values)
        rows = await self.store.settings_rows(origin.platform, origin.workspace_id)
        by_scope: dict[str, dict[str, Any]] = {scope: {} for scope in SCOPES}
        for scope, scope_id, key, value in rows:
            if scope == "tenant" or (scope == "channel" and scope_id == origin.channel_id) or (scope == "user" and scope_id == origin.user_id):
                by_scope[scope][key] = value
        for scope in SCOPES:  # later scopes are more specific and win
            for key, value in by_scope[scope].items():
                if scope == "user" and not KEYS[key].personal:
                    continue
                values[key] = Value(value, scope)
        return Effective(values)

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
        await self.store.put_setting(origin.platform, origin.workspace_id, scope, scope_id, key, value, by=actor.user_id)
        where = {"tenant": "here", "channel": "in this channel", "user": "for you"}[scope]
        return f"{key} {where}: {'back to the default' if value is None else _show(value)}."
