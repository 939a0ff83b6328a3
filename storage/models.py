"""The job as stored: what the store reads and writes, below both the core and the store.

`storage/` never imports `bot/`; the core re-exports these from `bot.core.models`.
"""
from __future__ import annotations

import time
from collections.abc import ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, model_serializer
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12


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


class Delivery(TypedDict, total=False):
    #: Which delivery attempt this is (1 = first) and when the first began.
    attempt: int
    first_at: float


class ABChoice(TypedDict, total=False):
    #: The A/B split the job was routed by, and the arm (a pipeline name) it got.
    split: str
    arm: str


class JobState(BaseModel):
    """Pipeline checkpoints and notes a job carries (state_json), typed.

    Every key the code writes is a field; a key a newer or older videobot wrote that is not
    listed here is kept as it is (extra="allow"), so old rows still load and nothing is lost.
    Only the keys that were set are stored (an unset field is not written as null).

    During the move from a plain dict it also reads and writes as a mapping: `state.get("k")`,
    `state["k"]`, `state["k"] = v`, `"k" in state`, `{**state}`, `dict(state)`, `.items()`, and
    compares equal to the dict of its keys. `story_scene` and `image_step_cost` are also
    columns of the jobs table (the store writes them from here), for SQL that needs them."""

    model_config = ConfigDict(extra="allow", validate_assignment=False)

    # --- stories -------------------------------------------------------------------------------
    #: The story's plan (bot.core.stories.StoryPlan as a dict).
    plan: dict[str, Any] | None = None
    transition: str | None = None
    #: How scene k continues scene k-1 ("extend", "last_frame", ...).
    continuity: str | None = None
    #: The scene jobs that made the story's video, in order.
    scene_jobs: list[str] | None = None
    #: Scenes reused from an earlier story: {"k": job id}.
    reuse: dict[str, str] | None = None
    #: And their files, copied in when the story was made: {"k": media path}.
    reuse_files: dict[str, str] | None = None
    redo_scene: int | None = None
    added_scene: int | None = None
    #: Set on a story's scene: which scene (1-based) and which attempt of it.
    story_scene: int | None = None
    #: A take of a set (bot.core.takes): its number; also a column, like story_scene.
    take: int | None = None
    story_attempt: int | None = None
    # --- what a job starts from --------------------------------------------------------------------
    source_video: str | None = None
    source_image: str | None = None
    source_remote_id: str | None = None
    source_provider: str | None = None
    # --- moderation ----------------------------------------------------------------------------------
    moderation_mode: str | None = None
    blocklist: list[str] | None = None
    moderated: str | None = None
    # --- routing and fallbacks -------------------------------------------------------------------
    ab: ABChoice | None = None
    pipelines_tried: list[str] | None = None
    fallbacks: list[dict[str, Any]] | None = None
    fallback_chain: list[str] | None = None
    # --- the image step ------------------------------------------------------------------------------
    image_step_path: str | None = None
    image_step_cost: float | None = None
    # --- the provider call -----------------------------------------------------------------------
    submit_sent_to: str | None = None
    submit_sent_at: float | None = None
    remote_since: float | None = None
    remote_retries: int | None = None
    failed_remote_ids: list[str] | None = None
    gpu_seconds: float | None = None
    # --- delivery ------------------------------------------------------------------------------------
    delivery: Delivery | None = None

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> JobState:
        """A stored state, whatever an older videobot wrote: a value that does not fit its field
        is kept aside under `unreadable` (never lost, never fatal to reading the job)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            state = cls.model_validate({k: v for k, v in data.items() if k not in bad})
            state["unreadable"] = {**(data.get("unreadable") or {}), **{k: data[k] for k in bad if k in data}}
            return state

    @model_serializer(mode="wrap")
    def _only_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        if not isinstance(self, JobState):  # a plain dict put in a Job's state without validation
            return dict(self)
        data: dict[str, Any] = handler(self)
        present = self.__pydantic_fields_set__
        return {k: v for k, v in data.items() if k in present or k not in _STATE_FIELDS}

    def _keys(self) -> list[str]:
        present = self.__pydantic_fields_set__
        return [*(k for k in _STATE_FIELDS if k in present), *(self.__pydantic_extra__ or ())]

    # --- the mapping view (the transition from a dict) -----------------------------------------------
    def keys(self) -> list[str]:  # type: ignore[override]
        return self._keys()

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __contains__(self, key: object) -> bool:
        # Hot (every `state.get` of the runner): no list built.
        # (pydantic counts extra keys as set too: a declared field is in __dict__, an extra one in __pydantic_extra__.)
        return (key in self.__pydantic_fields_set__ and key in self.__dict__) or key in (self.__pydantic_extra__ or ())

    def __getitem__(self, key: str) -> Any:
        if key in self.__pydantic_fields_set__ and key in self.__dict__:
            return self.__dict__[key]
        extra = self.__pydantic_extra__
        if extra and key in extra:
            return extra[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: Any) -> None:
        if key in type(self).model_fields:
            # Validated as the field's type, and marked set.
            checked = type(self).model_validate({key: value})
            setattr(self, key, getattr(checked, key))
        else:
            setattr(self, key, value)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        if key in type(self).model_fields:
            object.__setattr__(self, key, None)
            self.model_fields_set.discard(key)
        else:
            del self.__pydantic_extra__[key]  # type: ignore[index]
            self.model_fields_set.discard(key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: str, *default: Any) -> Any:
        if key not in self:
            if default:
                return default[0]
            raise KeyError(key)
        value = self[key]
        del self[key]
        return value

    def update(self, other: Mapping[str, Any] = {}, **more: Any) -> None:  # noqa: B006 (read only)
        for key, value in {**other, **more}.items():
            self[key] = value

    def items(self) -> ItemsView[str, Any]:
        return self.as_dict().items()

    def values(self) -> ValuesView[Any]:
        return self.as_dict().values()

    def as_dict(self) -> dict[str, Any]:
        """The set keys as a plain dict (JSON-ready)."""
        return self.model_dump(mode="json")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JobState):
            return self.as_dict() == other.as_dict()
        if isinstance(other, Mapping):
            return self.as_dict() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


MutableMapping.register(JobState)
_STATE_FIELDS = tuple(JobState.model_fields)


class Job(BaseModel):
    #: `job.state = {...}` (a dict) is validated into a JobState.
    model_config = ConfigDict(validate_assignment=True)

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
    state: JobState = Field(default_factory=JobState)
    #: Made somewhere not everyone may look (a DM, a private channel): shown only to its owner
    #: and the tenant's admins (the store's `viewer` filters).
    private: bool = False
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

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Job:
        # model_copy does not validate: a dict given as the state is made a JobState here.
        if update and "state" in update and not isinstance(update["state"], JobState):
            update = {**update, "state": JobState.model_validate(dict(update["state"]))}
        return super().model_copy(update=update, deep=deep)

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


class StatusTotal(BaseModel):
    """The unfinished jobs in one status: how many, what they reserve (their estimates; a story's
    scenes count nothing of their own), and when the oldest was created."""

    status: JobStatus
    jobs: int
    reserved_usd: float
    oldest_created_at: float


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


#: One workspace's installation of the app (Slack OAuth); its tokens are in `secret`, encrypted.
@dataclass(frozen=True)
class InstallationRow:
    platform: str
    enterprise_id: str
    team_id: str
    is_enterprise_install: bool
    secret: str
    expires_at: float | None
    installed_at: float
    updated_at: float
