"""The core's data: requests coming in, jobs as stored (defined in `storage.models`), events going out."""
from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from storage.models import TERMINAL, GenerateParams, Job, JobKind, JobStatus, Origin

__all__ = [
    "TERMINAL", "Actor", "EventKind", "GenerateParams", "GenerateRequest", "Job", "JobKind", "JobStatus", "Origin",
    "ProgressEvent",
]


class GenerateRequest(BaseModel):
    """A request as an adapter parses it from a command; defaults not yet applied."""

    model_config = ConfigDict(str_strip_whitespace=True)

    prompt: str
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


class Actor(BaseModel):
    """Who asks for an action on a job (cancel, delete...)."""

    user_id: str
    is_admin: bool = False
