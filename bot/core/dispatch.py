"""Runs a parsed chat command against the job service and says what to answer.

Every text adapter (console, Slack) calls this, so a command means the same
everywhere; the adapter only decides how the reply looks and where it goes.
"""
from __future__ import annotations

from pydantic import BaseModel

from bot.core.commands import Command
from bot.core.grants import personal_link
from bot.core.models import Actor, Job, JobStatus, Origin, Tenant
from bot.core.help import plain_commands
from bot.core.render import INTERRUPTED, interrupted, job_row, job_title
from bot.core.service import JobService
from bot.core.stories import StoryPreview, preview_story, submit_story
from bot.core.takes import more_like, reroll, use_take


class Reply(BaseModel):
    text: str
    #: The job the command created or acted on, when there is one.
    job: Job | None = None
    #: True when the command started a job whose progress the adapter should show.
    started: bool = False
    #: A story planned and waiting for its owner's Confirm / Edit / Cancel (chat platforms).
    preview: StoryPreview | None = None


async def run_command(service: JobService, command: Command, origin: Origin, actor: Actor | None = None) -> Reply:
    actor = actor or Actor.of(origin)
    if actor.platform is None:
        actor = actor.model_copy(update={"platform": origin.platform, "workspace_id": origin.workspace_id})
    if not actor.is_admin and service.is_admin(actor.user_id):
        # VIDEOBOT_ADMIN_USER_IDS are admins for every command on every platform (settings, usage), not only cancel/delete.
        actor = actor.model_copy(update={"is_admin": True})
    # Where the command comes from decides what the actor may see (a DM is its own tenant, without admins).
    actor = actor.model_copy(update={"direct": origin.direct, "channel_id": origin.channel_id, "is_admin": actor.is_admin and not origin.direct})
    name = command.name
    if is_help(command):
        return Reply(text=plain_commands())
    if name in ("video", "image"):
        job = await service.submit(command.generate_request(), origin)
        return Reply(text=f"Queued {job_title(job)}", job=job, started=True)
    if name == "story":
        if not command.words or command.text.lower() == "help":
            return Reply(text=STORY_HELP)
        if origin.platform != "cli":
            # In chat the plan is shown before anything is spent; the owner confirms it.
            preview = await preview_story(service, command.story_request(), origin)
            return Reply(text=preview.text(), preview=preview)
        job = await submit_story(service, command.story_request(), origin)
        return Reply(text=f"Queued {job_title(job)}\n{describe_plan(job)}", job=job, started=True)
    if name == "jobs":
        status = command.flags.get("status")
        jobs = await service.list_jobs(
            origin=origin,
            status=JobStatus(status) if status in JobStatus.__members__.values() else None,
            limit=command.int_flag("limit") or 10,
        )
        if not jobs:
            return Reply(text="You have no jobs yet. Try /video a teal coupe crossing a desert at noon")
        return Reply(text="\n".join(job_row(j) for j in jobs))
    if name == "job":
        job = await service.get_for(command.job_id(), origin, admin=actor.is_admin)
        return Reply(text=describe_job(job, operator=Tenant.of(origin) is None), job=job)
    if name == "remix":
        job_id = command.job_id()
        job = await service.remix(job_id, command.rest(), origin, admin=actor.is_admin)
        return Reply(text=f"Queued {job_title(job)}", job=job, started=True)
    if name == "extend":
        job_id = command.job_id()
        job = await service.extend(job_id, origin, seconds=command.int_flag("seconds"), prompt=command.rest() or None, admin=actor.is_admin)
        return Reply(text=f"Queued {job_title(job)}", job=job, started=True)
    if name == "reroll":
        job = await reroll(service, command.job_id(), origin, admin=actor.is_admin)
        return Reply(text=f"Queued {job_title(job)}", job=job, started=True)
    if name == "use":
        job = await use_take(service, command.job_id(), command.take_number(), origin, admin=actor.is_admin)
        return Reply(text=f"Posting take {job.state.get('take')} of set {job.parent_id} on its own (job {job.id}).", job=job, started=True)
    if name == "more":
        job = await more_like(service, command.job_id(), command.take_number(), origin, admin=actor.is_admin)
        return Reply(text=f"Queued {job_title(job)}", job=job, started=True)
    if name == "animate":
        job = await service.animate(command.job_id(), origin, prompt=command.rest() or None, seconds=command.int_flag("seconds"), admin=actor.is_admin)
        return Reply(text=f"Queued {job_title(job)}", job=job, started=True)
    if name == "cancel":
        job = await service.cancel(command.job_id(), actor)
        return Reply(text=f"Job {job.id} is {job.status.value}.", job=job)
    if name == "delete":
        job = await service.delete(command.job_id(), actor)
        return Reply(text=f"Job {job.id} deleted.", job=job)
    if name == "confirm":
        job = await service.confirm(command.job_id(), actor)
        return Reply(text=f"Queued {job_title(job)}", job=job, started=True)
    if name == "decline":
        await service.decline(command.job_id(), actor)
        return Reply(text="Cancelled; nothing was spent.")
    if name == "usage":
        text = (await service.usage(origin)).text()
        if actor.is_admin and origin.workspace_id:
            top = await service.top_spenders(origin)
            if top:
                text += "\nTop spenders today: " + ", ".join(f"{user} ${spent:.2f}" for user, spent in top)
        return Reply(text=text)
    if name == "settings":
        return Reply(text=await _settings(service, command, origin, actor))
    if name == "gallery":
        return Reply(text=gallery_reply(service, origin, actor))
    raise AssertionError(f"unhandled command {name}")  # parse_command only returns known names


def is_help(command: Command) -> bool:
    """`/help`, and `/video help` (what a Slack user types first)."""
    return command.name == "help" or (command.name == "video" and command.text.lower() == "help")


def gallery_reply(service: JobService, origin: Origin, actor: Actor) -> str:
    """A personal, expiring link to the web gallery (adapters show it only to the asker)."""
    settings = service.settings
    admin = actor.is_admin or service.is_admin(actor.user_id)
    link = personal_link(origin, actor.model_copy(update={"is_admin": admin}), settings, operator=Tenant.of(origin) is None)
    if link is None:
        return "The web gallery is not set up here. An admin sets VIDEOBOT_PUBLIC_URL (and runs `videobot web`, or sets VIDEOBOT_WEB_PORT)."
    minutes = settings.web_link_minutes
    valid = f"{minutes / 60:g} hours" if minutes >= 120 else f"{minutes:g} minutes"
    pages = "your workspace's videos, usage and diagnostics" if admin else "your workspace's videos"
    return f"Your personal gallery link ({pages}); it works for {valid} and only for you, so do not share it:\n{link}"


STORY_HELP = (
    "/story SCENE | SCENE | SCENE · one video of several scenes, each continuing the last\n"
    "/story PREMISE --scenes 4 · the premise planned into scenes\n"
    "Options: --seconds N (per scene), --pipeline NAME, --size WxH, --transition cut|fade"
)


def describe_plan(job: Job) -> str:
    plan = job.state.get("plan", {})
    lines = [f"look: {plan['look']}"] if plan.get("look") else []
    lines += [f"scene {k}: {scene}" for k, scene in enumerate(plan.get("scenes", []), 1)]
    if job.cost_estimate:
        lines.append(f"estimate: ${job.cost_estimate:.2f}")
    return "\n".join(lines)


SETTINGS_HELP = (
    "/settings · what applies to you and where each value comes from\n"
    "/settings set KEY VALUE · for this workspace or server (admins)\n"
    "/settings channel KEY VALUE · for this channel only (admins)\n"
    "/settings me KEY VALUE · your own defaults (pipeline, seconds, size)\n"
    "/settings unset KEY [channel|me] · back to the default"
)


async def _settings(service: JobService, command: Command, origin: Origin, actor: Actor) -> str:
    words = command.words
    if not words:
        return await service.settings_text(origin)
    verb = words[0].lower()
    scopes = {"set": "tenant", "channel": "channel", "me": "user"}
    if verb in scopes and len(words) >= 3:
        return await service.change_setting(origin, actor, scopes[verb], words[1].lower(), " ".join(words[2:]))
    if verb == "unset" and len(words) >= 2:
        scope = {"channel": "channel", "me": "user"}.get(words[2].lower() if len(words) > 2 else "", "tenant")
        return await service.change_setting(origin, actor, scope, words[1].lower(), None)
    return SETTINGS_HELP


def describe_job(job: Job, *, operator: bool = True) -> str:
    """One job in full. Server paths only for the operator (CLI, console), never in chat."""
    lines = [job_title(job), f"prompt: {job.prompt}", f"status: {job.status.value} ({job.progress}%)"]
    if interrupted(job):
        lines[-1] += f", {INTERRUPTED}"
    if job.output_path and operator:
        lines.append(f"file: {job.output_path}")
    if job.error_message:
        lines.append(f"error: {job.error_message}")
    if job.cost_actual is not None or job.cost_estimate is not None:
        cost = job.cost_actual if job.cost_actual is not None else job.cost_estimate
        lines.append(f"cost: ${cost:.2f}")
    return "\n".join(lines)
