"""A provider that takes a known time, so what the bot adds on top can be measured."""
from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from pathlib import Path

from providers.base import Capability, RemoteJob, RemoteStatus, VideoProvider, VideoRequest
from providers.local_render import render_clip
from providers.pipeline import Pipeline


class SleepProvider(VideoProvider):
    name = "sleep"
    capabilities = frozenset({Capability.TEXT_TO_VIDEO})
    default_seconds = 1
    default_size = "128x72"

    def __init__(self, duration: float, sample: Path, poll_after: float = 0.1) -> None:
        self.duration = duration
        self.sample = sample
        self.poll_after = poll_after
        self.started: dict[str, float] = {}

    def validate(self, request: VideoRequest) -> None:
        return None

    def estimate_cost(self, request: VideoRequest) -> float | None:
        return 0.0  # priced (free): the spend gate refuses a model without a price

    async def submit(self, request: VideoRequest) -> RemoteJob:
        remote_id = secrets.token_hex(6)
        self.started[remote_id] = time.monotonic()
        return RemoteJob(id=remote_id, status=RemoteStatus.QUEUED, poll_after=self.poll_after)

    async def poll(self, remote_id: str) -> RemoteJob:
        elapsed = time.monotonic() - self.started[remote_id]
        if elapsed >= self.duration:
            return RemoteJob(id=remote_id, status=RemoteStatus.COMPLETED, progress=100)
        progress = int(100 * elapsed / self.duration)
        remaining = self.duration - elapsed
        # Like a good API's poll-after hint: never asks us to come back after it is done.
        return RemoteJob(id=remote_id, status=RemoteStatus.IN_PROGRESS, progress=progress, poll_after=min(self.poll_after, remaining))

    async def download(self, remote_id: str, dest: Path) -> None:
        await asyncio.to_thread(shutil.copyfile, self.sample, dest)


def sleep_pipeline(duration: float, workdir: Path, poll_after: float = 0.1) -> Pipeline:
    sample = workdir / "sample.mp4"
    if not sample.exists():
        render_clip(sample, prompt="sample", seconds=1, width=128, height=72, fps=8, seed=1)
    return Pipeline(name="sleep", video=SleepProvider(duration, sample, poll_after))
