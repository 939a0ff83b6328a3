"""The provider interfaces: what a video or image provider declares and does.

A provider translates one API. Shared behaviour (polling cadence, retries with
backoff, the overall timeout) lives in `providers.polling`; media work lives in
`providers.media`. Providers never see chat platforms or the job store.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from providers.errors import InvalidRequest

_SIZE_RE = re.compile(r"^(\d{2,5})x(\d{2,5})$")


class Capability(StrEnum):
    TEXT_TO_VIDEO = "text_to_video"
    IMAGE_TO_VIDEO = "image_to_video"
    REMIX = "remix"
    EXTEND = "extend"
    TEXT_TO_IMAGE = "text_to_image"


class Operation(StrEnum):
    GENERATE = "generate"  # text-to-video, or image-to-video when an input image is given
    REMIX = "remix"  # the source video again with a new prompt
    EXTEND = "extend"  # the source clip followed by new seconds


def parse_size(size: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720); raises InvalidRequest with the expected form."""
    m = _SIZE_RE.match(size.strip().lower())
    if not m:
        raise InvalidRequest(f"Size '{size}' is not WIDTHxHEIGHT, for example 1280x720.")
    return int(m.group(1)), int(m.group(2))


class VideoRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    operation: Operation = Operation.GENERATE
    prompt: str
    seconds: int
    size: str
    model: str | None = None
    seed: int | None = None
    input_image: Path | None = None
    #: The provider's id of the source video, for remix/extend on the provider that made it.
    source_remote_id: str | None = None
    #: The source clip on disk, for remix/extend (always present for those operations).
    source_video: Path | None = None
    #: Our job id. Providers may tag remote jobs with it to find them after an ambiguous crash.
    client_ref: str = ""
    #: Ask for a soundtrack (the local provider synthesises one). Providers that always
    #: make sound, or never can, ignore it.
    audio: bool = False

    @property
    def dimensions(self) -> tuple[int, int]:
        return parse_size(self.size)

    @property
    def capability(self) -> Capability:
        if self.operation is Operation.REMIX:
            return Capability.REMIX
        if self.operation is Operation.EXTEND:
            return Capability.EXTEND
        return Capability.IMAGE_TO_VIDEO if self.input_image else Capability.TEXT_TO_VIDEO


class RemoteStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RemoteJob(BaseModel):
    """A provider's view of one job, translated to one shape."""

    id: str
    status: RemoteStatus
    progress: int = Field(default=0, ge=0, le=100)
    model: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: Actual cost in USD when the provider reports it.
    cost: float | None = None
    #: The provider's hint for the next poll, in seconds.
    poll_after: float | None = None
    #: A short status the user may see, e.g. "queued at the provider".
    note: str | None = None
    #: GPU time the job used, for providers that report it (self-hosted ComfyUI).
    gpu_seconds: float | None = None

    @property
    def done(self) -> bool:
        return self.status in (RemoteStatus.COMPLETED, RemoteStatus.FAILED, RemoteStatus.CANCELLED)


class VideoProvider(ABC):
    """One video API. Subclasses set `name`, `capabilities` and `default_model`."""

    name: str = "video"
    capabilities: frozenset[Capability] = frozenset()
    default_model: str = ""
    default_seconds: int = 4
    default_size: str = "1280x720"

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    @abstractmethod
    def validate(self, request: VideoRequest) -> None:
        """Raise InvalidRequest (with what is allowed) before anything is sent or billed."""

    def estimate_cost(self, request: VideoRequest) -> float | None:
        """USD estimate before submitting; None when unknown."""
        return None

    @abstractmethod
    async def submit(self, request: VideoRequest) -> RemoteJob:
        """Create the remote job. Must never be retried once it may have reached the server."""

    @abstractmethod
    async def poll(self, remote_id: str) -> RemoteJob:
        """One status read. Safe to retry."""

    @abstractmethod
    async def download(self, remote_id: str, dest: Path) -> None:
        """Stream the finished MP4 to `dest` (the caller renames it into place)."""

    async def download_thumbnail(self, remote_id: str, dest: Path) -> bool:
        """Write the provider's own thumbnail (JPEG) if it has one; False means: use the first frame."""
        return False

    async def cancel(self, remote_id: str) -> None:
        """Cancel or delete the remote job; best effort."""

    def forget(self, remote_id: str) -> None:
        """The job's result is safely stored: drop whatever the provider kept about it locally."""

    #: True when an EXTEND continues the provider's own source video and returns source + new
    #: seconds in one file (a story's scenes can then be extensions of each other).
    continues_source: bool = False

    #: True when `find_remote` returning None proves that no create was accepted (so the
    #: runner may send it again without risking a second bill).
    proves_absence: bool = False

    async def find_remote(
        self,
        client_ref: str,
        *,
        request: VideoRequest | None = None,
        sent_at: float | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> RemoteJob | None:
        """After a crash between create and storing the id: the remote job that create made, if
        the API can tell. `sent_at` is when the create was sent (epoch seconds); `exclude` are
        remote ids other jobs already own."""
        return None

    def error_for(self, job: RemoteJob) -> Exception:
        """The taxonomy error for a failed remote job; providers map their own failure codes."""
        from providers.errors import GenerationFailed

        return GenerationFailed(
            job.error_message or "The provider could not generate this video.",
            remote_code=job.error_code,
            provider=self.name,
        )

    async def aclose(self) -> None:
        """Release connections."""


class ImageRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt: str
    size: str = "1024x1024"
    model: str | None = None
    quality: str | None = None
    seed: int | None = None
    client_ref: str = ""


class ImageResult(BaseModel):
    path: Path
    width: int
    height: int
    model: str | None = None
    cost: float | None = None
    remote_id: str | None = None


class ImageProvider(ABC):
    """One text-to-image API."""

    name: str = "image"
    capabilities: frozenset[Capability] = frozenset({Capability.TEXT_TO_IMAGE})
    default_model: str = ""
    default_size: str = "1024x1024"

    @abstractmethod
    def validate(self, request: ImageRequest) -> None:
        """Raise InvalidRequest before anything is billed."""

    def estimate_cost(self, request: ImageRequest) -> float | None:
        return None

    @abstractmethod
    async def generate(self, request: ImageRequest, dest: Path) -> ImageResult:
        """Make the image and write it (PNG) to `dest`."""

    async def aclose(self) -> None:
        """Release connections."""
