"""`/video settings` for a workspace admin: a modal with every tenant setting, prefilled.

The fields are `bot.core.tenant_settings.KEYS`, filled with what applies here
(`service.tenant_settings.effective`); on submit only the fields whose text changed are saved,
each through `service.change_setting(..., "tenant", key, value)` (the core checks the admin and
parses the value). A value the core cannot parse is shown on its field and the modal stays open.
Non-admins get the core's text view (commands.py leaves them to run_command).
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.adapters.slack.flows import ephemeral_teller
from bot.core.errors import user_message
from bot.core.models import Origin
from bot.core.tenant_settings import KEYS

if TYPE_CHECKING:
    from bot.adapters.slack.host import SlackHost

log = logging.getLogger(__name__)

SETTINGS_MODAL = "videobot_settings"
INPUT = "value"
#: Slack's limit for a plain_text_input's text.
MAX_TEXT = 3000


def shown(value: Any) -> str:
    """A setting's value as the text a field holds (lists comma-separated; unset is empty)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def settings_modal(values: dict[str, str], channel_id: str) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = []
    for name, key in KEYS.items():
        element: dict[str, Any] = {"type": "plain_text_input", "action_id": INPUT, "max_length": MAX_TEXT}
        if values.get(name):
            element["initial_value"] = values[name][:MAX_TEXT]
        blocks.append({
            "type": "input", "block_id": name, "optional": True, "label": {"type": "plain_text", "text": name},
            "hint": {"type": "plain_text", "text": key.help[:2000]}, "element": element,
        })  # fmt: skip
    return {
        "type": "modal", "callback_id": SETTINGS_MODAL,
        # Where to answer; what each field showed is its initial_value (only changed fields are saved).
        "private_metadata": json.dumps({"channel": channel_id}),
        "title": {"type": "plain_text", "text": "Workspace settings"},
        "submit": {"type": "plain_text", "text": "Save"}, "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }  # fmt: skip


async def open_settings(adapter: SlackHost, origin: Origin, trigger_id: str) -> None:
    here = await adapter.service.tenant_settings.effective(origin)
    values = {name: shown(here.get(name)) for name in KEYS}
    await (await adapter.client_for(origin.workspace_id)).views_open(trigger_id=trigger_id, view=settings_modal(values, origin.channel_id or ""))


def _changes(view: dict[str, Any]) -> dict[str, str]:
    """Fields whose submitted text differs from what the modal showed."""
    before = {b["block_id"]: b["element"].get("initial_value") or "" for b in view.get("blocks", []) if b.get("type") == "input"}
    state = (view.get("state") or {}).get("values") or {}
    changed: dict[str, str] = {}
    for name, old in before.items():
        new = ((state.get(name) or {}).get(INPUT) or {}).get("value") or ""
        if name in KEYS and new.strip() != old.strip():
            changed[name] = new.strip()
    return changed


def _slips(changed: dict[str, str]) -> dict[str, str]:
    """Values the core's parser refuses, by field (an empty field means back to the default)."""
    slips: dict[str, str] = {}
    for name, raw in changed.items():
        if raw:
            try:
                KEYS[name].parse(raw)
            except Exception as exc:
                slips[name] = user_message(exc)[:150]
    return slips


def register(bolt: AsyncApp, adapter: SlackHost) -> None:
    async def submitted(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        changed = _changes(view)
        slips = _slips(changed)
        if slips:
            await ack(response_action="errors", errors=slips)
            return
        await ack()
        adapter.later(save(body, view, changed), "slack-settings")

    async def save(body: dict[str, Any], view: dict[str, Any], changed: dict[str, str]) -> None:
        user = body["user"]
        channel = str(json.loads(view.get("private_metadata") or "{}").get("channel", ""))
        tell = ephemeral_teller(adapter, channel, str(user["id"]), team_id=user.get("team_id") or (body.get("team") or {}).get("id"))
        if not changed:
            await tell("No setting changed.")
            return
        team_id = user.get("team_id") or (body.get("team") or {}).get("id")
        origin = adapter.origin_for(team_id, channel, str(user["id"]), user.get("username") or user.get("name"))
        actor = await adapter.actor(origin.user_id, team_id=team_id, check_workspace_admin=True)
        lines = []
        for name, raw in changed.items():
            try:
                lines.append(await adapter.service.change_setting(origin, actor, "tenant", name, raw or None))
            except Exception as exc:
                lines.append(f"{name}: {user_message(exc)}")
        await tell("\n".join(lines))

    bolt.view(SETTINGS_MODAL)(submitted)
