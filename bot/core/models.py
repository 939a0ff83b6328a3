"""The core's data: requests coming in, jobs as stored (defined in `storage.models`), events going out."""
from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from storage.models import TERMINAL, GenerateParams, Job, JobKind, JobStatus, Origin

__all__ = [
    "OPERATOR_PLATFORMS", "TERMINAL", "Actor", "EventKind", "GenerateParams", "GenerateRequest", "Job", "JobKind",
    "JobStatus", "Origin", "ProgressEvent", "Tenant", "CleanText", "clean_text",
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
    """A Slack workspace or Discord guild on one platform: the boundary nobody's job crosses."""

    model_config = ConfigDict(frozen=True)

    platform: str
    workspace_id: str | None = None

    @classmethod
    def of(cls, origin: Origin) -> Tenant | None:
        """The caller's tenant; None for the operator (CLI, console), who sees every tenant."""
        if origin.platform in OPERATOR_PLATFORMS:
            return None
        return cls(platform=origin.platform, workspace_id=origin.workspace_id)

    def holds(self, job: Job) -> bool:
        return job.origin.platform == self.platform and job.origin.workspace_id == self.workspace_id


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

    @classmethod
    def of(cls, origin: Origin, *, is_admin: bool = False) -> Actor:
        return cls(user_id=origin.user_id, is_admin=is_admin, platform=origin.platform, workspace_id=origin.workspace_id)

    @property
    def operator(self) -> bool:
        return self.platform in OPERATOR_PLATFORMS

    @property
    def tenant(self) -> Tenant | None:
        if self.platform is None or self.operator:
            return None
        return Tenant(platform=self.platform, workspace_id=self.workspace_id)
