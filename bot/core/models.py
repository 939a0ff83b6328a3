"""The core's data: requests coming in, jobs as stored (defined in `storage.models`), events going out."""
from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from storage.models import PLACE, TERMINAL, GenerateParams, Job, JobKind, JobStatus, Origin

__all__ = [
    "OPERATOR_PLATFORMS", "PLACE", "TERMINAL", "Actor", "EventKind", "GenerateParams", "GenerateRequest", "Job", "JobKind",
    "JobStatus", "Origin", "ProgressEvent", "Tenant", "may_see", "in_chat", "DELIVER", "WEB_ONLY", "CleanText", "clean_text",
]

#: Characters no prompt needs and chat clients act on: C0 and C1 controls (newline kept, tab
#: made a space), DEL, and the bidirectional marks, embeddings, overrides and isolates that
#: make a message read differently from what it says ("a\u202eexe.gif" shows as "afig.exe").
_DROPPED = dict.fromkeys(
    [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0),
     0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)  # fmt: skip
_LINE_BREAKS = {0x0D: "\n", 0x2028: "\n", 0x2029: "\n", 0x09: " "}


def clean_text(text: str) -> str:
    """User text as it may be stored and shown: line breaks kept (CR LF, CR and the Unicode line
    and paragraph separators become one newline), tabs become spaces, the rest above dropped."""
    return text.replace("\r\n", "\n").translate(_LINE_BREAKS).translate(_DROPPED)


#: A prompt field: cleaned whichever door it came through.
CleanText = Annotated[str, AfterValidator(clean_text)]


class GenerateRequest(BaseModel):
    """A request as an adapter parses it from a command; defaults not yet applied."""

    model_config = ConfigDict(str_strip_whitespace=True)

    prompt: CleanText
    kind: JobKind = JobKind.GENERATE
    pipeline: str | None = None
    model: str | None = None
    seconds: int | None = None
    size: str | None = None
    seed: int | None = None
    #: Ask for a soundtrack where the pipeline can make one.
    audio: bool = False
    #: Several versions at once (a set of takes); None: the tenant's `takes` setting, else 1.
    takes: int | None = None
    image_path: Path | None = None
    #: Raw image bytes (chat attachments) when there is no path yet.
    image_bytes: bytes | None = Field(default=None, repr=False)
    image_name: str | None = None
    parent_id: str | None = None


class EventKind(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    DELIVERING = "delivering"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED)


class ProgressEvent(BaseModel):
    kind: EventKind
    job: Job
    #: 1-based place in the queue, for QUEUED events.
    position: int | None = None
    progress: int = 0
    #: User-facing text: the failure explanation, or a note like "queued at the provider".
    message: str | None = None
    #: Seconds until the job is likely done, once recent similar jobs give a median.
    eta: float | None = None
    at: float = Field(default_factory=time.time)


#: Platforms whose user is the operator at the machine: they see and may do everything.
OPERATOR_PLATFORMS = frozenset({"cli", "console"})


class Tenant(BaseModel):
    """A Slack workspace or Discord guild on one platform, or one person's direct conversation
    with the bot (a Discord DM, a Slack IM: `owner` is that person): the boundary nobody's job crosses."""

    model_config = ConfigDict(frozen=True)

    platform: str
    workspace_id: str | None = None
    #: Set for a direct conversation: only this user (and the operator) sees its jobs.
    owner: str | None = None

    @classmethod
    def of(cls, origin: Origin) -> Tenant | None:
        """The caller's tenant; None for the operator (CLI, console), who sees every tenant."""
        if origin.platform in OPERATOR_PLATFORMS:
            return None
        return cls(platform=origin.platform, workspace_id=origin.workspace_id, owner=origin.user_id if origin.direct else None)

    def holds(self, job: Job) -> bool:
        return Tenant.of(job.origin) == self


#: In a job's origin extras: `DELIVER: WEB_ONLY` marks a job started on the web whose result shows
#: on its web page alone (the asker could not see the original's conversation), never in chat.
DELIVER = "deliver"
WEB_ONLY = "web"


def in_chat(job: Job) -> bool:
    """Whether the job's status and result are posted where it was asked (not only on the web)."""
    return job.origin.extra.get(DELIVER) != WEB_ONLY


def may_see(job: Job, *, user_id: str, channel_id: str | None = None, admin: bool = False) -> bool:
    """Within its tenant, may this person see `job`? A public job: anyone there. A private one
    (private channel, group DM, a channel @everyone cannot view): its owner, the tenant's admins,
    and whoever asks from inside that same conversation. A direct one: its owner (the tenant
    check already says so)."""
    if not job.origin.private or user_id == job.origin.user_id:
        return True
    if job.origin.direct:
        return False
    return admin or (channel_id is not None and channel_id == job.origin.channel_id)


class Actor(BaseModel):
    """Who asks for an action on a job (cancel, delete...), and in which tenant.

    `is_admin` means an admin of that tenant (Discord: Manage Server or Administrator in the
    guild; Slack: workspace admin or owner, or VIDEOBOT_ADMIN_USER_IDS) and counts only there.
    An actor built without a platform is judged by ownership alone (never as an admin).
    """

    user_id: str
    is_admin: bool = False
    platform: str | None = None
    workspace_id: str | None = None
    #: Acting from a direct conversation (DM, IM): their own tenant, where nobody else is an admin.
    direct: bool = False
    #: The conversation the action comes from (a private job is visible from inside it).
    channel_id: str | None = None

    @classmethod
    def of(cls, origin: Origin, *, is_admin: bool = False) -> Actor:
        return cls(
            user_id=origin.user_id, is_admin=is_admin and not origin.direct, platform=origin.platform,
            workspace_id=origin.workspace_id, direct=origin.direct, channel_id=origin.channel_id,
        )  # fmt: skip

    @property
    def operator(self) -> bool:
        return self.platform in OPERATOR_PLATFORMS

    @property
    def tenant(self) -> Tenant | None:
        if self.platform is None or self.operator:
            return None
        return Tenant(platform=self.platform, workspace_id=self.workspace_id, owner=self.user_id if self.direct else None)

    def sees(self, job: Job) -> bool:
        """The operator sees everything; anyone else only their tenant's jobs they may see."""
        if self.operator:
            return True
        tenant = self.tenant
        return tenant is not None and tenant.holds(job) and may_see(
            job, user_id=self.user_id, channel_id=self.channel_id, admin=self.is_admin and not self.direct
        )
