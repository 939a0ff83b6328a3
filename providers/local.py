"""The embedded offline provider: renders real H.264 MP4s on this machine.

It behaves like a remote API so the core runs the same way for every provider:
`submit` returns an id at once, rendering happens in a worker thread, `poll`
reports progress. Its "server state" (each render's spec and finished clip) lives in a
work dir, so a job survives a restart: polling an id whose render died with the old
process renders it again (deterministically, and there is nothing to bill).

The work dir belongs in the shared media directory (bot/pipelines.py puts it there): a
worker that takes over a job from a killed one must find the spec the dead one wrote.
Paths in a spec that lie inside the media directory are kept relative to the work dir,
so a machine that mounts the volume elsewhere still finds the input image or source clip.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from providers.base import (
    Capability,
    ImageProvider,
    ImageRequest,
    ImageResult,
    Operation,
    RemoteJob,
    RemoteStatus,
    VideoProvider,
    VideoRequest,
    parse_size,
)
from providers.errors import InvalidRequest, ModelUnavailable
from providers.local_render import RenderCancelled, render_request, render_still
from providers.media import copy_file

MODEL = "local-v1"
IMAGE_MODEL = "local-still-v1"
MIN_SIDE, MAX_SIDE = 64, 1920


@dataclass
class _Render:
    task: asyncio.Task[None] | None = None
    progress: int = 0
    started: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)


class LocalVideoProvider(VideoProvider):
    name = "local"
    capabilities = frozenset(
        {Capability.TEXT_TO_VIDEO, Capability.IMAGE_TO_VIDEO, Capability.REMIX, Capability.EXTEND}
    )
    default_model = MODEL
    default_seconds = 4
    default_size = "1280x720"

    def __init__(
        self, work_dir: Path, *, fps: int = 24, max_seconds: int = 20, concurrency: int = 1, max_image_bytes: int = 20_000_000
    ) -> None:
        self.work_dir = work_dir  # made at the first submit: a refused request writes nothing
        self.fps = fps
        self.max_seconds = max_seconds
        self.max_image_bytes = max_image_bytes
        self._slots = asyncio.Semaphore(concurrency)
        self._renders: dict[str, _Render] = {}

    def validate(self, request: VideoRequest) -> None:
        if request.model not in (None, MODEL):
            raise ModelUnavailable(f"The local pipeline has one model, '{MODEL}'.", provider=self.name)
        if not 1 <= request.seconds <= self.max_seconds:
            raise InvalidRequest(f"The local pipeline makes clips of 1 to {self.max_seconds} seconds.")
        width, height = parse_size(request.size)
        _check_size(width, height)
        if request.operation in (Operation.REMIX, Operation.EXTEND) and request.source_video is None:
            raise InvalidRequest("Remix and extend need the source video, which is missing.")

    def estimate_cost(self, request: VideoRequest) -> float | None:
        return 0.0

    async def submit(self, request: VideoRequest) -> RemoteJob:
        remote_id = f"local_{secrets.token_hex(8)}"
        self._write_spec(remote_id, request)
        self._start(remote_id, request)
        return RemoteJob(id=remote_id, status=RemoteStatus.QUEUED, model=MODEL, cost=0.0)

    async def poll(self, remote_id: str) -> RemoteJob:
        render = self._renders.get(remote_id)
        if render is None:
            if self._video_path(remote_id).exists():
                return RemoteJob(id=remote_id, status=RemoteStatus.COMPLETED, progress=100, model=MODEL, cost=0.0)
            spec = self._spec_path(remote_id)
            if not spec.exists():
                return RemoteJob(
                    id=remote_id, status=RemoteStatus.FAILED, error_code="not_found",
                    error_message="The local render was lost; generate again.",
                )  # fmt: skip
            # The process that rendered it is gone: render again (same seed, same clip).
            render = self._start(remote_id, self._read_spec(spec))
        task = render.task
        if task is not None and task.done():
            exc = task.exception() if not task.cancelled() else None
            del self._renders[remote_id]
            if task.cancelled() or isinstance(exc, RenderCancelled) or render.cancel.is_set():
                return RemoteJob(id=remote_id, status=RemoteStatus.CANCELLED, progress=render.progress)
            if exc is not None:
                return RemoteJob(
                    id=remote_id, status=RemoteStatus.FAILED, progress=render.progress,
                    error_code=type(exc).__name__, error_message=str(exc) or "render failed",
                )  # fmt: skip
            return RemoteJob(id=remote_id, status=RemoteStatus.COMPLETED, progress=100, model=MODEL, cost=0.0)
        if not render.started:
            return RemoteJob(id=remote_id, status=RemoteStatus.QUEUED, note="queued at the provider", poll_after=0.1)
        return RemoteJob(id=remote_id, status=RemoteStatus.IN_PROGRESS, progress=render.progress, poll_after=0.1)

    async def download(self, remote_id: str, dest: Path) -> None:
        await asyncio.to_thread(copy_file, self._video_path(remote_id), dest)

    async def cancel(self, remote_id: str) -> None:
        render = self._renders.get(remote_id)
        if render is not None:
            render.cancel.set()
        self._spec_path(remote_id).unlink(missing_ok=True)

    async def aclose(self) -> None:
        for render in self._renders.values():
            render.cancel.set()
        tasks = [r.task for r in self._renders.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._renders.clear()

    def _start(self, remote_id: str, request: VideoRequest) -> _Render:
        render = _Render()
        self._renders[remote_id] = render
        render.task = asyncio.get_running_loop().create_task(self._render(remote_id, request, render))
        return render

    async def _render(self, remote_id: str, request: VideoRequest, render: _Render) -> None:
        async with self._slots:
            if render.cancel.is_set():
                raise RenderCancelled()
            render.started = True
            final = self._video_path(remote_id)
            # Its own part file: a worker that took the job over while this one still ran
            # (a lease that ran out across machines) must not write into the same file.
            part = final.with_name(f"{final.name}.{os.getpid()}-{secrets.token_hex(4)}.part")

            def on_progress(pct: int) -> None:
                render.progress = pct  # an int store: safe to do from the worker thread

            try:
                await asyncio.to_thread(
                    render_request,
                    part,
                    operation=request.operation.value,
                    prompt=request.prompt,
                    seconds=request.seconds,
                    size=request.dimensions,
                    fps=self.fps,
                    seed=request.seed,
                    input_image=request.input_image,
                    source_video=request.source_video,
                    max_image_bytes=self.max_image_bytes,
                    on_progress=on_progress,
                    cancel=render.cancel,
                    audio=request.audio,
                )
                part.replace(final)
            finally:
                part.unlink(missing_ok=True)  # gone already when it became the clip

    def _write_spec(self, remote_id: str, request: VideoRequest) -> None:
        portable = request.model_copy(
            update={"input_image": self._portable(request.input_image), "source_video": self._portable(request.source_video)}
        )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        spec = self._spec_path(remote_id)
        temp = spec.with_name(f"{spec.name}.{os.getpid()}.tmp")
        temp.write_text(portable.model_dump_json(), encoding="utf-8")
        temp.replace(spec)  # whole or absent: a worker reading it after a crash never sees half

    def _read_spec(self, spec: Path) -> VideoRequest:
        request = VideoRequest.model_validate_json(spec.read_text(encoding="utf-8"))
        return request.model_copy(
            update={"input_image": self._local(request.input_image), "source_video": self._local(request.source_video)}
        )

    def _portable(self, path: Path | None) -> Path | None:
        """A path inside the media directory (the work dir's parent), relative to the work dir."""
        if path is None or not path.is_absolute():
            return path
        media = self.work_dir.resolve().parent
        resolved = path.resolve()
        if not resolved.is_relative_to(media):
            return path
        return Path(os.path.relpath(resolved, self.work_dir.resolve()))

    def _local(self, path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else self.work_dir / path

    def _spec_path(self, remote_id: str) -> Path:
        return self.work_dir / f"{remote_id}.json"

    def _video_path(self, remote_id: str) -> Path:
        return self.work_dir / f"{remote_id}.mp4"

    def forget(self, remote_id: str) -> None:
        """Drop the provider's copy once the core has its own (like a remote job's expiry)."""
        self._spec_path(remote_id).unlink(missing_ok=True)
        self._video_path(remote_id).unlink(missing_ok=True)


def _check_size(width: int, height: int) -> None:
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE) or width % 2 or height % 2:
        raise InvalidRequest(
            f"The local pipeline takes sizes with even sides from {MIN_SIDE} to {MAX_SIDE}, for example 1280x720."
        )


class LocalImageProvider(ImageProvider):
    """Offline stills: the first frame the local video renderer would draw for the prompt."""

    name = "local-image"
    default_model = IMAGE_MODEL
    default_size = "1280x720"

    def validate(self, request: ImageRequest) -> None:
        if request.model not in (None, IMAGE_MODEL):
            raise ModelUnavailable(f"The local image pipeline has one model, '{IMAGE_MODEL}'.", provider=self.name)
        _check_size(*parse_size(request.size))

    def estimate_cost(self, request: ImageRequest) -> float | None:
        return 0.0

    async def generate(self, request: ImageRequest, dest: Path) -> ImageResult:
        width, height = parse_size(request.size)
        await asyncio.to_thread(render_still, dest, prompt=request.prompt, width=width, height=height, seed=request.seed)
        return ImageResult(path=dest, width=width, height=height, model=IMAGE_MODEL, cost=0.0)
