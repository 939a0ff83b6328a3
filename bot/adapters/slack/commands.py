"""/video and /image: the text goes through the shared parser and dispatcher."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.adapters.slack.flows import Tell, respond_teller, show_job
from bot.core.commands import parse_command
from bot.core.dispatch import run_command
from bot.core.errors import user_message
from bot.core.render import HELP

if TYPE_CHECKING:
    from bot.adapters.slack.app import SlackAdapter

SLACK_HELP = (
    f"```{HELP}```\nIn Slack every command goes after /video, for example "
    "`/video a red fox --seconds 4 --size 1280x720`, `/video jobs`, `/video cancel k3f9x2m1`; and `/image PROMPT`."
)


def register(bolt: AsyncApp, adapter: SlackAdapter) -> None:
    async def video(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()  # Slack's 3 s: everything else happens after the answer
        await run_text(adapter, body, "video", respond_teller(respond))

    async def image(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        await run_text(adapter, body, "image", respond_teller(respond))

    bolt.command("/video")(video)
    bolt.command("/image")(image)


async def run_text(adapter: SlackAdapter, body: dict[str, Any], default: str, tell: Tell) -> None:
    origin = adapter.origin_for(body.get("team_id"), body["channel_id"], body["user_id"], body.get("user_name"))
    try:
        command = parse_command(body.get("text") or "", default=default)
        if command.name == "help" or (command.name == "video" and command.text.lower() == "help"):
            await tell(SLACK_HELP)
            return
        owner_only = command.name in ("cancel", "delete")
        actor = await adapter.actor(origin.user_id, team_id=origin.workspace_id, check_workspace_admin=owner_only)
        reply = await run_command(adapter.app.service, command, origin, actor)
    except Exception as exc:
        await tell(user_message(exc))
        return
    if reply.started and reply.job is not None:
        await show_job(adapter, reply.job, tell)
        return
    if command.name == "delete" and reply.job is not None:
        await adapter.surface.remove(reply.job)
    # Listings are aligned columns: a code block keeps them aligned.
    await tell(f"```{reply.text}```" if command.name in ("jobs", "job") else reply.text)
