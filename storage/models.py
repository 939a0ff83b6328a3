"""The job as stored: what the store reads and writes, below both the core and the store.

`storage/` never imports `bot/`; the core re-exports these from `bot.core.models`.
"""
from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class JobKind(StrEnum):
    GENERATE = "generate"
    VARIATION = "variation"  # re-roll: same prompt, new seed
    REMIX = "remix"
    EXTEND = "extend"
    IMAGE = "image"
    #: A multi-scene video: a parent whose scenes are child jobs (state["story_scene"] = k).
    STORY = "story"
    #: Several versions of one prompt at once: a parent whose takes are child jobs (state["take"] = k).
    TAKES = "takes"


class JobStatus(StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    DELIVERING = "delivering"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        return not self.terminal and self is not JobStatus.QUEUED


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class Origin(BaseModel):
    """Where a job came from and where its messages are, in the platform's own ids."""

    platform: str = "cli"  # cli | console | slack | discord
    workspace_id: str | None = None  # Slack team / Discord guild
    channel_id: str | None = None
    user_id: str = "local"
    user_name: str | None = None
    #: The message that shows progress (Slack ts / Discord message id).
    status_message_id: str | None = None
    #: The message that carries the result file, when it is not the status message.
    result_message_id: str | None = None
    #: Platform extras the adapter needs later (thread ts, interaction token and expiry, ...).
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def place(self) -> str:
        """"direct" (a DM or IM: its own tenant, owned by its user), "private" (a private channel,
        group DM or a channel @everyone cannot view) or "public". Adapters say it in `extra`."""
        return str(self.extra.get(PLACE, "public"))

    @property
    def direct(self) -> bool:
        return self.place == "direct"

    @property
    def private(self) -> bool:
        return self.place != "public"


#: The key in `Origin.extra` where adapters say what kind of place a conversation is.
PLACE = "place"


class GenerateParams(BaseModel):
    """What the user asked for, after defaults were filled in."""

    seconds: int
    size: str
    seed: int
    model: str | None = None
    image_path: str | None = None
    #: Free-form per-pipeline options (quality, ...).
    options: dict[str, Any] = Field(default_factory=dict)


class Job(BaseModel):
    id: str
    parent_id: str | None = None
    kind: JobKind
    origin: Origin
    prompt: str
    params: GenerateParams
    pipeline: str
    provider: str | None = None
    model: str | None = None
    remote_id: str | None = None
    status: JobStatus
    progress: int = 0
    cost_estimate: float | None = None
    cost_actual: float | None = None
    output_path: str | None = None
    thumbnail_path: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: Pipeline checkpoints (image step output, fallbacks taken, ...), so a resume skips done work.
    state: dict[str, Any] = Field(default_factory=dict)
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    deleted_at: float | None = None
    #: When retention removed the job's files (the row and its history stay).
    media_expired_at: float | None = None
    #: Which runner drives the job (`storage.leases.Holder` as text) and until when.
    lease_owner: str | None = None
    lease_until: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def delivery_attempt(self) -> int:
        """Which delivery attempt this is (1 = first). The runner records each attempt before it
        calls the adapter, so an attempt > 1 means an earlier one may have posted already and
        the adapter must look for that post before posting again."""
        return int(self.state.get("delivery", {}).get("attempt", 1))

    @property
    def elapsed(self) -> float:
        end = self.finished_at or time.time()
        return max(0.0, end - (self.started_at or self.created_at))


# --- scale-out: signals between processes, workers, queue, reports ------------------------------


class Signal(BaseModel):
    """One row of `job_signals`: a job changed (kind: progress, state, ...); the rest is read from the row.
    Ids only grow, and a reader that has seen id N has seen every signal below N (both backends
    commit signals in id order)."""

    id: int
    job_id: str
    kind: str
    payload: dict[str, Any] = Field(default_factory=dict)
    at: float


class WorkerRow(BaseModel):
    """A running videobot process as its last heartbeat described it."""

    id: str
    host: str
    pid: int
    role: str
    started_at: float
    last_seen: float
    #: Jobs it held (leases) at that heartbeat.
    held: int = 0


class QueueStats(BaseModel):
    #: Jobs waiting (status queued).
    queued: int
    #: created_at of the oldest queued job, None when nothing waits.
    oldest_queued_at: float | None
    #: Jobs past the queue and not finished (submitting ... delivering).
    running: int


class Spender(BaseModel):
    """What one user (of one platform and workspace) spent since a moment, and on how many jobs."""

    platform: str
    user_id: str
    workspace_id: str | None
    jobs: int
    spent: float


class JobOutcome(BaseModel):
    """One job as the statistics and usage reports see it."""

    pipeline: str
    status: JobStatus
    created_at: float
    finished_at: float | None
    #: What it counts against the budget (storage.spend's rules).
    cost: float
    #: GPU time a self-hosted provider reported (state["gpu_seconds"]).
    gpu_seconds: float = 0.0
    user_id: str = ""
    user_name: str | None = None
    #: The A/B split the job was routed by and the arm it got (state["ab"]), if any.
    ab_split: str | None = None
    ab_arm: str | None = None


class RemoteRef(BaseModel):
    """A job with a provider-side id: which of ours it is, and how it stands."""

    remote_id: str
    job_id: str
    status: JobStatus


class LeaseHolder(BaseModel):
    """A runner holding leases on unfinished jobs."""

    owner: str
    jobs: int
    #: The latest lease_until among them.
    until: float | None


class PendingSpend(BaseModel):
    """A request waiting for its owner's confirmation (`put_pending`), as stored."""

    token: str
    platform: str
    user_id: str
    job: Job
    estimate: float
    created_at: float
    expires_at: float
    #: pending | confirmed | cancelled | expired
    state: str
