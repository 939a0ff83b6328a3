"""What a job's status message says, as a platform-neutral view.

The core decides the content (title, bar, percent, place in line, ETA, elapsed, the
result or error, and which buttons this state offers); an adapter only renders a
`StatusView` into its platform's payload. Two views that compare equal render the
same, so adapters skip sends when the view did not change.
"""
from __future__ import annotations

import time
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from bot.core.models import EventKind, Job, JobKind, JobStatus, ProgressEvent
from bot.core.render import format_elapsed, job_title, progress_bar, status_line
from bot.core.take_set import results_of

MAX_PROMPT_SHOWN = 300


class Action(StrEnum):
    """Everything a button or reaction can ask of a job; `bot.core.actions` says what each does."""

    CANCEL = "cancel"
    REROLL = "reroll"
    REMIX = "remix"
    EXTEND = "extend"
    DELETE = "delete"
    ANIMATE = "animate"  # an image result, made into a video with the same prompt
    DM = "dm"  # the file, sent privately
    REDO_SCENE = "redo"  # a story: one scene made again (which one: a picker of the scenes), joined again
    ADD_SCENE = "add-scene"  # a story: one more scene from the last frame (a prompt)
    USE = "use"  # a set of takes: take N posted alone as a normal result (free)
    MORE_LIKE = "more"  # a set of takes: N new takes starting from take N

    @property
    def starts_job(self) -> bool:
        """Whether doing it makes a new job (whose status message the platform then shows)."""
        return self in _STARTS_JOB


_STARTS_JOB = frozenset({Action.REROLL, Action.REMIX, Action.EXTEND, Action.ANIMATE, Action.MORE_LIKE})

#: Actions on one take of a set: the button (or reaction) says which take.
TAKE_ACTIONS = frozenset({Action.USE, Action.MORE_LIKE})


class Phase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DELIVERING = "delivering"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DELETED = "deleted"


class StatusView(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    title: str
    prompt: str
    phase: Phase
    #: The one status line every platform shows (emoji, bar, percent, elapsed, ETA, note).
    line: str
    percent: int | None = None
    bar: str | None = None
    position: int | None = None
    eta: str | None = None
    elapsed: str | None = None
    #: Failure text or the undelivered note; shown publicly in short, privately in full.
    error: str | None = None
    #: Buttons this state offers, in display order.
    actions: tuple[Action, ...] = ()
    #: Whether this is the last state of the job (always sent, never coalesced away).
    final: bool = False
    #: A still of the result for platforms that show one on the card.
    thumbnail_path: str | None = None
    #: The job's page in the web gallery ("Open in gallery"), when VIDEOBOT_PUBLIC_URL is set.
    gallery_url: str | None = None
    #: A story's scenes (number, label) for the Redo picker, when Redo is offered.
    scenes: tuple[tuple[int, str], ...] = ()
    #: A set of takes: the finished takes' numbers (one Use N and More like N each).
    takes: tuple[int, ...] = ()


_PHASES = {
    EventKind.QUEUED: Phase.QUEUED,
    EventKind.STARTED: Phase.RUNNING,
    EventKind.PROGRESS: Phase.RUNNING,
    EventKind.DELIVERING: Phase.DELIVERING,
    EventKind.COMPLETED: Phase.DONE,
    EventKind.FAILED: Phase.FAILED,
    EventKind.CANCELLED: Phase.CANCELLED,
}
_STATUS_PHASES = {
    JobStatus.QUEUED: Phase.QUEUED,
    JobStatus.DELIVERING: Phase.DELIVERING,
    JobStatus.COMPLETED: Phase.DONE,
    JobStatus.FAILED: Phase.FAILED,
    JobStatus.CANCELLED: Phase.CANCELLED,
}


def actions_for(job: Job, phase: Phase) -> tuple[Action, ...]:
    """The buttons under a job's message in this phase (their permission checks are the service's)."""
    if phase in (Phase.QUEUED, Phase.RUNNING):
        return (Action.CANCEL,)
    if job.kind is JobKind.STORY:
        # A failed story keeps its finished scenes: Redo makes the rest from where it stopped.
        if phase is Phase.DONE and job.media_expired_at is None:
            return (Action.REDO_SCENE, Action.ADD_SCENE, Action.REROLL, Action.DELETE)
        if phase is Phase.FAILED and job.media_expired_at is None:
            return (Action.REDO_SCENE, Action.REROLL)
        return ()
    if job.kind is JobKind.TAKES:
        if phase is Phase.DONE and job.media_expired_at is None:
            return (Action.USE, Action.MORE_LIKE, Action.REROLL, Action.DELETE)
        return (Action.REROLL,) if phase is Phase.FAILED else ()
    if phase is Phase.DONE and job.media_expired_at is None:
        if job.kind is JobKind.IMAGE:
            return (Action.ANIMATE, Action.REROLL, Action.DELETE)
        return (Action.REROLL, Action.REMIX, Action.EXTEND, Action.DELETE)
    if phase is Phase.FAILED:
        return (Action.REROLL,)
    return ()


def short_prompt(prompt: str, limit: int = MAX_PROMPT_SHOWN) -> str:
    return prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"


def gallery_link(public_url: str | None, job: Job) -> str | None:
    """The job's page in the web gallery (it asks for a grant; the link itself grants nothing)."""
    if not public_url or job.deleted_at is not None or job.state.get("story_scene") or job.state.get("take"):
        return None
    return f"{public_url.rstrip('/')}/jobs/{job.id}"


def status_view(job: Job, event: ProgressEvent | None = None, *, public_url: str | None = None) -> StatusView:
    """The view of a job: from its latest event when there is one, else from the stored row.
    `public_url`: the web gallery's address (VIDEOBOT_PUBLIC_URL), for a finished job's link."""
    if job.deleted_at is not None:
        return StatusView(
            job_id=job.id, title=job_title(job), prompt=short_prompt(job.prompt), phase=Phase.DELETED,
            line="🗑️ Deleted", final=True,
        )  # fmt: skip
    if event is None:
        event = _event_from_row(job)
    phase = _PHASES[event.kind]
    running = phase is Phase.RUNNING or phase is Phase.DELIVERING
    error = None
    line = status_line(event)
    if phase is Phase.FAILED:
        error = event.message or job.error_message or "Failed."
        # Public and short; the owner gets `error` in full, privately.
        line = f"❌ Failed: {_first_sentence(error)}"
    elif phase is Phase.DONE and job.error_code == "undelivered":
        error = job.error_message
    return StatusView(
        job_id=job.id,
        title=job_title(job),
        prompt=short_prompt(job.prompt),
        phase=phase,
        line=line,
        percent=event.progress if running else (100 if phase is Phase.DONE else None),
        bar=progress_bar(event.progress) if running else None,
        position=event.position if phase is Phase.QUEUED else None,
        eta=format_elapsed(event.eta) if event.eta is not None and event.eta >= 1 and not event.kind.final else None,
        elapsed=format_elapsed(job.elapsed) if job.started_at else None,
        error=error,
        actions=actions_for(job, phase),
        final=event.kind.final,
        thumbnail_path=job.thumbnail_path if phase is Phase.DONE else None,
        gallery_url=gallery_link(public_url, job) if phase in (Phase.DONE, Phase.DELIVERING) else None,
        scenes=tuple(scene_choices(job)) if job.kind is JobKind.STORY else (),
        takes=tuple(r.take for r in results_of(job) if r.ok) if job.kind is JobKind.TAKES else (),
    )


def scene_choices(job: Job, width: int = 75) -> list[tuple[int, str]]:
    """(number, label) of each scene of a story, for a Redo picker (labels fit Slack's 75 and Discord's 100)."""
    plan = job.state.get("plan") or {}
    choices = []
    for k, scene in enumerate(plan.get("scenes", []), 1):
        label = f"Scene {k}: {scene}"
        choices.append((k, label if len(label) <= width else label[: width - 1] + "…"))
    return choices


def _first_sentence(text: str, limit: int = 90) -> str:
    head = text.split(". ", 1)[0].rstrip(".")
    return head if len(head) <= limit else head[: limit - 1] + "…"


def _event_from_row(job: Job) -> ProgressEvent:
    phase = _STATUS_PHASES.get(job.status, Phase.RUNNING)
    kind = {
        Phase.QUEUED: EventKind.QUEUED,
        Phase.RUNNING: EventKind.PROGRESS,
        Phase.DELIVERING: EventKind.DELIVERING,
        Phase.DONE: EventKind.COMPLETED,
        Phase.FAILED: EventKind.FAILED,
        Phase.CANCELLED: EventKind.CANCELLED,
    }[phase]
    return ProgressEvent(kind=kind, job=job, progress=job.progress, message=job.error_message, at=time.time())
