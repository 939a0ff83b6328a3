"""/video (with its sub-commands) and /image: the core's parser and dispatcher, answered in Slack.

`/video remix ID a new prompt`, `/video extend ID --seconds 4 what happens next`,
`/video jobs`, `/video cancel ID`... are recognised by the core's parser whatever follows
the sub-command; a quoted prompt may hold `--` or start with a command word.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.adapters.slack.blocks import REACTIONS, esc, help_markup, unesc
from bot.adapters.slack.settings_modal import open_settings
from bot.adapters.slack.flows import Tell, respond_teller, show_job
from bot.adapters.slack.stories import show_preview
from bot.core.actions import reaction_action
from bot.core.commands import Command, parse_command
from bot.core.dispatch import is_help, run_command
from bot.core.help import deployment_help
from bot.core.models import Actor, Origin
from bot.core.views import Action

if TYPE_CHECKING:
    from bot.adapters.slack.host import SlackHost


def register(bolt: AsyncApp, adapter: SlackHost) -> None:
    # Acked at once (Slack's 3 s): the answer goes out before the command touches the store.
    async def video(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        adapter.later(run_text(adapter, body, "video", respond_teller(respond)), "slack-/video")

    async def image(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        adapter.later(run_text(adapter, body, "image", respond_teller(respond)), "slack-/image")

    bolt.command("/video")(video)
    bolt.command("/image")(image)


async def help_text(adapter: SlackHost, origin: Origin) -> str:
    """What this deployment offers the caller, from the core, in Slack's syntax."""
    offers = await deployment_help(adapter.service, origin, upload_limit=adapter.settings.file_limit_bytes)
    reactions = {f":{name}:": action for name, emoji in REACTIONS.items() if (action := reaction_action(emoji)) is not None}
    reactions[":one:–:four:"] = Action.USE
    return help_markup(offers, reactions)


async def run_text(adapter: SlackHost, body: dict[str, Any], default: str, tell: Tell) -> None:
    origin = adapter.origin_for(
        body.get("team_id"), body["channel_id"], body["user_id"], body.get("user_name"), channel_name=body.get("channel_name"),
        enterprise_id=body.get("enterprise_id"),
    )
    try:
        # Slack escapes &, < and > in what people type: the prompt is kept as typed.
        command = parse_command(unesc(body.get("text") or ""), default=default)
        if is_help(command):
            await tell.markup(await help_text(adapter, origin))
            return
        actor = await _actor(adapter, command, origin)
        if command.name == "settings" and not command.words and actor.is_admin and body.get("trigger_id"):
            # An admin edits the workspace's settings in a form; everyone else reads the text view.
            await open_settings(adapter, origin, str(body["trigger_id"]))
            return
        reply = await run_command(adapter.service, command, origin, actor)
    except Exception as exc:
        await tell.refusal(exc)
        return
    if reply.preview is not None:
        await show_preview(reply.preview, tell)  # a story's plan, privately, before anything is spent
        return
    if reply.started and reply.job is not None:
        await show_job(adapter, reply.job, tell)
        return
    if command.name == "delete" and reply.job is not None:
        await adapter.surface.remove(reply.job)
    if command.name in ("jobs", "job"):
        await tell.markup(f"```{esc(reply.text)}```")  # aligned columns stay aligned
        return
    await tell(reply.text)


#: Commands where being a workspace admin changes the answer (users.info is asked only for these).
_ADMIN_MATTERS = ("usage", "settings", "gallery")


async def _actor(adapter: SlackHost, command: Command, origin: Origin) -> Actor:
    """Who is asking, in their workspace: whether Slack calls them an admin is asked only where it
    matters (cancel/delete of someone else's job, usage, settings)."""
    team_id = origin.workspace_id
    if command.name in _ADMIN_MATTERS:
        return await adapter.actor(origin.user_id, team_id=team_id, check_workspace_admin=True)
    if command.name not in ("cancel", "delete") or not command.words:
        return await adapter.actor(origin.user_id, team_id=team_id)
    job = await adapter.service.get_for(command.job_id(), origin)
    return await adapter.actor(origin.user_id, team_id=team_id, check_workspace_admin=job.origin.user_id != origin.user_id)
