"""How long a job will take: the median run time of recent finished jobs like it.

"Like it" is the same pipeline, seconds and size. Kept in memory (seeded from the store
at start, updated as jobs finish), so every progress event can carry an ETA without a
query. No ETA is given until there are enough samples to mean something.
"""
from __future__ import annotations

import statistics
from collections import deque

from storage.models import Job, JobKind

#: Samples needed before an ETA is shown, and how many recent ones count.
MIN_SAMPLES = 3
WINDOW = 20


def _key(job: Job) -> tuple[str, int, str, str]:
    seconds = 0 if job.kind is JobKind.IMAGE else job.params.seconds
    # A story (several scenes of `seconds` each) is timed apart from single videos.
    kind = {JobKind.IMAGE: "image", JobKind.STORY: "story", JobKind.TAKES: "takes"}.get(job.kind, "video")
    return (job.pipeline, seconds, job.params.size, kind)


class EtaBook:
    def __init__(self, *, min_samples: int = MIN_SAMPLES, window: int = WINDOW) -> None:
        self.min_samples = min_samples
        self.window = window
        self._runs: dict[tuple[str, int, str, str], deque[float]] = {}

    def observe(self, job: Job) -> None:
        """A job finished successfully: its run time (start to done) is a sample."""
        if job.started_at is None or job.finished_at is None or job.error_code is not None:
            return
        self._runs.setdefault(_key(job), deque(maxlen=self.window)).append(max(0.0, job.finished_at - job.started_at))

    def median(self, job: Job) -> float | None:
        runs = self._runs.get(_key(job))
        if runs is None or len(runs) < self.min_samples:
            return None
        return statistics.median(runs)

    def remaining(self, job: Job, *, now: float, position: int | None = None, parallel: int = 1) -> float | None:
        """Seconds until done: for a running job, the median less what it has run; for a queued
        one, the runs ahead of it (shared among `parallel` slots) plus its own."""
        median = self.median(job)
        if median is None:
            return None
        if job.started_at is None:
            ahead = max(0, (position or 1) - 1) // max(1, parallel)
            return median * (ahead + 1)
        return max(0.0, median - (now - job.started_at))
