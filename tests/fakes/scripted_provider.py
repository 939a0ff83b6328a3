"""An in-process video provider whose 'server' state outlives runners, for core tests.

The core's own behaviour (fairness, cancel, restart, no double create) is what is
under test here, not an SDK, so a provider object is the right seam; every real
API is tested against a loopback emulator instead.
"""
from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from providers.base import Capability, RemoteJob, RemoteStatus, VideoProvider, VideoRequest
from providers.errors import InvalidRequest, VideobotError
from providers.local_render import render_clip
from providers.pipeline import Pipeline


@dataclass
class ScriptedServer:
    #: Polls a job needs before it completes.
    polls_to_finish: int = 2
    #: While clear, jobs stay in progress (lets a test stop a runner mid-job).
    release: asyncio.Event = field(default_factory=asyncio.Event)
    creates: list[VideoRequest] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    jobs: dict[str, dict[str, object]] = field(default_factory=dict)
    fail_submit: VideobotError | None = None
    fail_job: tuple[str, str] | None = None
    #: Create number (1-based) -> an event: that job stays in progress until it is set (lets a
    #: test see a state that would otherwise pass faster than the status budget shows it).
    hold: dict[int, asyncio.Event] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.release.set()


class ScriptedProvider(VideoProvider):
    name = "scripted"
    capabilities = frozenset({Capability.TEXT_TO_VIDEO, Capability.IMAGE_TO_VIDEO, Capability.REMIX, Capability.EXTEND})
    default_model = "scripted-1"
    default_seconds = 1
    default_size = "128x72"

    def __init__(self, server: ScriptedServer, *, cost: float = 0.25, findable: bool = False) -> None:
        self.server = server
        self.cost = cost
        self.findable = findable

    def validate(self, request: VideoRequest) -> None:
        if not 1 <= request.seconds <= 10:
            raise InvalidRequest("The scripted pipeline makes clips of 1 to 10 seconds.")

    def estimate_cost(self, request: VideoRequest) -> float | None:
        return self.cost

    async def submit(self, request: VideoRequest) -> RemoteJob:
        if self.server.fail_submit is not None:
            raise self.server.fail_submit
        remote_id = f"vid_{secrets.token_hex(4)}"
        self.server.creates.append(request)
        self.server.jobs[remote_id] = {"polls": 0, "status": RemoteStatus.QUEUED, "request": request, "n": len(self.server.creates)}
        return RemoteJob(id=remote_id, status=RemoteStatus.QUEUED, poll_after=0.01)

    async def poll(self, remote_id: str) -> RemoteJob:
        job = self.server.jobs[remote_id]
        if job["status"] is RemoteStatus.CANCELLED:
            return RemoteJob(id=remote_id, status=RemoteStatus.CANCELLED)
        if self.server.fail_job is not None:
            code, message = self.server.fail_job
            return RemoteJob(id=remote_id, status=RemoteStatus.FAILED, error_code=code, error_message=message)
        job["polls"] = int(job["polls"]) + 1  # type: ignore[call-overload]
        gate = self.server.hold.get(int(job["n"]))  # type: ignore[call-overload]
        held = not self.server.release.is_set() or (gate is not None and not gate.is_set())
        if held or int(job["polls"]) < self.server.polls_to_finish:  # type: ignore[call-overload]
            progress = min(90, 10 * int(job["polls"]))  # type: ignore[call-overload]
            return RemoteJob(id=remote_id, status=RemoteStatus.IN_PROGRESS, progress=progress, poll_after=0.01)
        return RemoteJob(id=remote_id, status=RemoteStatus.COMPLETED, progress=100, cost=self.cost)

    async def download(self, remote_id: str, dest: Path) -> None:
        self.server.downloads.append(remote_id)
        request: VideoRequest = self.server.jobs[remote_id]["request"]  # type: ignore[assignment]
        width, height = request.dimensions
        await asyncio.to_thread(
            render_clip, dest, prompt=request.prompt, seconds=request.seconds, width=width, height=height, fps=8, seed=request.seed
        )

    async def cancel(self, remote_id: str) -> None:
        self.server.cancels.append(remote_id)
        if remote_id in self.server.jobs:
            self.server.jobs[remote_id]["status"] = RemoteStatus.CANCELLED

    async def find_remote(self, client_ref: str, **_: object) -> RemoteJob | None:
        if not self.findable:
            return None
        for remote_id, job in self.server.jobs.items():
            if job["request"].client_ref == client_ref:  # type: ignore[attr-defined]
                return RemoteJob(id=remote_id, status=RemoteStatus.IN_PROGRESS)
        return None


def scripted_pipeline(server: ScriptedServer, **kw: object) -> Pipeline:
    return Pipeline(name="scripted", video=ScriptedProvider(server, **kw))  # type: ignore[arg-type]
