"""The result buttons: Re-roll, Remix… and Extend… (modals), Delete. The value is the job id."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.adapters.slack.blocks import DELETE, EXTEND, REMIX, REROLL, extend_modal, remix_modal
from bot.adapters.slack.flows import respond_teller, start_job
from bot.core.errors import user_message
from bot.core.models import Tenant

if TYPE_CHECKING:
    from bot.adapters.slack.app import SlackAdapter


def _job_id(body: dict[str, Any]) -> str:
    return str(body["actions"][0]["value"])


def _channel(body: dict[str, Any]) -> str:
    return str((body.get("channel") or {}).get("id") or body["container"]["channel_id"])


def register(bolt: AsyncApp, adapter: SlackAdapter) -> None:
    service = adapter.app.service

    async def reroll(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        job_id = _job_id(body)
        origin = adapter.origin_for(body["user"].get("team_id"), _channel(body), body["user"]["id"], body["user"].get("username"))
        await start_job(adapter, origin, lambda o: service.reroll(job_id, o), respond_teller(respond))

    async def open_modal(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        # trigger_id lives 3 s: open the modal first, validate on submit.
        build = remix_modal if body["actions"][0]["action_id"] == REMIX else extend_modal
        try:
            await adapter.client.views_open(trigger_id=body["trigger_id"], view=build(_job_id(body), _channel(body)))
        except Exception as exc:
            await respond_teller(respond)(user_message(exc))

    async def delete(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        try:
            team_id = (body.get("team") or {}).get("id") or body["user"].get("team_id")
            job = await service.get(_job_id(body), tenant=Tenant(platform=adapter.platform, workspace_id=team_id))
            actor = await adapter.actor(body["user"]["id"], team_id=team_id, check_workspace_admin=body["user"]["id"] != job.origin.user_id)
            deleted = await service.delete(job.id, actor)
            await adapter.surface.remove(deleted)
        except Exception as exc:
            await respond_teller(respond)(user_message(exc))

    bolt.action(REROLL)(reroll)
    bolt.action(REMIX)(open_modal)
    bolt.action(EXTEND)(open_modal)
    bolt.action(DELETE)(delete)
