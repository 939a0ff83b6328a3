"""What every button and reaction means, once, for every platform.

Adapters map their inputs (a Slack action id, a Discord custom id, an emoji) to an
`Action` and call `perform`; the result says what to tell the user and whether a
new job started whose progress the adapter should show.
"""
from __future__ import annotations

from pydantic import BaseModel

from bot.core.models import Actor, Job, Origin
from bot.core.render import job_title
from bot.core.service import JobService
from bot.core.stories import add_scene, redo_scene
from bot.core.takes import more_like, reroll, use_take
from providers.errors import InvalidRequest
from bot.core.views import Action

#: In a job's origin extras, where it was started when not in chat ("web"): no chat flow posts
#: its status message, so the adapter rendering its platform does (`App.announce`, or on the
#: job's first event in a process that did not start it).
VIA = "via"

#: Reactions every platform understands (the emoji as the platform reports it).
REACTIONS = {"🔁": Action.REROLL, "❌": Action.CANCEL, "✉️": Action.DM, "✉": Action.DM, "🎬": Action.ANIMATE}
#: On a set of takes: 1️⃣-4️⃣ do what Use N does (the keycap emoji, with or without its variation selector).
TAKE_REACTIONS = {f"{k}\ufe0f\u20e3": k for k in range(1, 5)} | {f"{k}\u20e3": k for k in range(1, 5)}


class Outcome(BaseModel):
    text: str
    #: The job acted on, or the new job an action started.
    job: Job
    started: bool = False
    #: For DM: the file to send privately.
    file_path: str | None = None


def reaction_action(emoji: str) -> Action | None:
    return REACTIONS.get(emoji)


def reaction_take(emoji: str) -> int | None:
    """The take a keycap reaction (1️⃣-4️⃣) names: Use that take."""
    return TAKE_REACTIONS.get(emoji)


async def perform(
    service: JobService,
    action: Action,
    job_id: str,
    *,
    actor: Actor,
    origin: Origin,
    prompt: str | None = None,
    seconds: int | None = None,
    scene: int | None = None,
    take: int | None = None,
) -> Outcome:
    """Do what `action` means on `job_id` for `actor`; new jobs are created with `origin`.

    ❌ and the Cancel button mean "stop it" while a job runs and "remove it" once it is
    finished, so one gesture always does the sensible thing. On a story, Re-roll tells the
    same script again with new seeds; Redo makes scene `scene` again; Add scene adds `prompt`.
    On a set of takes, Re-roll makes every take again; Use and More like act on take `take`.
    A new job passes admission (bot.core.admission) like a typed command; `actor.is_admin` counts
    for the reuse rule only in the actor's own tenant.
    """
    admin = actor.is_admin and not actor.direct and not origin.direct
    if action is Action.CANCEL:
        job = await service.get_for(job_id, origin, admin=admin)
        if job.terminal:
            job = await service.delete(job_id, actor)
            return Outcome(text=f"Job {job.id} deleted.", job=job)
        job = await service.cancel(job_id, actor)
        return Outcome(text=f"Job {job.id} is {job.status.value}.", job=job)
    if action is Action.DELETE:
        job = await service.delete(job_id, actor)
        return Outcome(text=f"Job {job.id} deleted.", job=job)
    if action is Action.REROLL:
        job = await reroll(service, job_id, origin, admin=admin)
    elif action is Action.REMIX:
        job = await service.remix(job_id, prompt or "", origin, admin=admin)
    elif action is Action.EXTEND:
        job = await service.extend(job_id, origin, seconds=seconds, prompt=prompt or None, admin=admin)
    elif action is Action.REDO_SCENE:
        if scene is None:
            raise InvalidRequest("Pick the scene to make again.")
        job = await redo_scene(service, job_id, scene, origin, admin=admin)
    elif action is Action.ADD_SCENE:
        job = await add_scene(service, job_id, prompt or "", origin, admin=admin)
    elif action is Action.USE or action is Action.MORE_LIKE:
        if take is None:
            raise InvalidRequest("Say which take: Use 1 to Use 4.")
        if action is Action.USE:
            job = await use_take(service, job_id, take, origin, admin=admin)
            return Outcome(text=f"Take {take} of set {job.parent_id} is posted on its own (job {job.id}).", job=job, started=True)
        job = await more_like(service, job_id, take, origin, admin=admin)
    elif action is Action.ANIMATE:
        job = await service.animate(job_id, origin, prompt=prompt or None, seconds=seconds, admin=admin)
    else:  # DM
        job = await service.get_for(job_id, origin, admin=admin)
        path = await service.file_for(job_id, origin, admin=admin)
        return Outcome(text=f"Here is job {job.id}.", job=job, file_path=path)
    return Outcome(text=f"Queued {job_title(job)}", job=job, started=True)
