"""Media paths in the store are relative to VIDEOBOT_MEDIA_DIR; in memory they are absolute.

Gateways and workers on several machines share one media volume, mounted wherever each
machine likes: a job row says `ab12cd34/video.mp4`, and each process reads it under its own
media directory. Rows written before this (absolute paths) are read as they are.

`MediaPathStore` wraps the store (either backend) and does the translation at that one
boundary, so the runner, the service and the adapters keep working with absolute paths:
every job going in (create, update, a confirmation waiting in the store) has its media paths
made relative, and every job coming out (whatever a method returns: a job, a list of jobs, a
tuple holding one) has them made absolute again. Methods that return no jobs pass through.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from bot.core.models import GenerateParams, Job

#: Job.state entries that hold a media path.
STATE_PATHS = ("image_step_path", "source_video", "source_image")


class MediaPaths:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def to_store(self, value: str | None) -> str | None:
        """A path under the media directory as a relative one; anything else unchanged."""
        if not value:
            return value
        path = Path(value)
        if not path.is_absolute():
            return value
        try:
            return PurePosixPath(path.relative_to(self.root)).as_posix()
        except ValueError:
            return value  # outside the media directory (an older row, a file the operator named)

    def from_store(self, value: str | None) -> str | None:
        """A stored path as this process sees it: relative ones under its media directory."""
        if not value:
            return value
        path = Path(value)
        return value if path.is_absolute() else str(self.root / path)

    def _map(self, job: Job, fn: Callable[[str | None], str | None]) -> Job:
        update: dict[str, Any] = {}
        for name in ("output_path", "thumbnail_path"):
            value = getattr(job, name)
            if value and fn(value) != value:
                update[name] = fn(value)
        params = self._params(job.params, fn)
        if params is not job.params:
            update["params"] = params
        state = self._state(job.state, fn)
        if state is not job.state:
            update["state"] = state
        return job.model_copy(update=update) if update else job

    def _params(self, params: GenerateParams, fn: Callable[[str | None], str | None]) -> GenerateParams:
        if params.image_path and fn(params.image_path) != params.image_path:
            return params.model_copy(update={"image_path": fn(params.image_path)})
        return params

    def _state(self, state: dict[str, Any], fn: Callable[[str | None], str | None]) -> dict[str, Any]:
        changed = {k: fn(state[k]) for k in STATE_PATHS if isinstance(state.get(k), str) and fn(state[k]) != state[k]}
        return {**state, **changed} if changed else state

    def job_in(self, job: Job) -> Job:
        return self._map(job, self.to_store)

    def job_out(self, job: Job) -> Job:
        return self._map(job, self.from_store)

    def fields_in(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The fields of a store `update`, with their media paths made relative."""
        out = dict(fields)
        for name in ("output_path", "thumbnail_path"):
            if isinstance(out.get(name), str):
                out[name] = self.to_store(out[name])
        if isinstance(out.get("params"), GenerateParams):
            out["params"] = self._params(out["params"], self.to_store)
        if isinstance(out.get("state"), dict):
            out["state"] = self._state(out["state"], self.to_store)
        return out

    def results_out(self, value: Any) -> Any:
        if isinstance(value, Job):
            return self.job_out(value)
        if isinstance(value, list) and value and isinstance(value[0], Job):
            return [self.job_out(j) if isinstance(j, Job) else j for j in value]
        if isinstance(value, tuple) and any(isinstance(v, Job) for v in value):
            return tuple(self.job_out(v) if isinstance(v, Job) else v for v in value)
        return value


class MediaPathStore:
    """The store, with media paths translated (see the module doc). Everything else passes through."""

    def __init__(self, inner: Any, paths: MediaPaths) -> None:
        self.inner = inner
        self.paths = paths

    async def create(self, job: Job, **kwargs: Any) -> Job:
        stored = await self.inner.create(self.paths.job_in(job), **kwargs)
        return self.paths.job_out(stored)

    async def update(self, job_id: str, **fields: Any) -> Job:
        return self.paths.job_out(await self.inner.update(job_id, **self.paths.fields_in(fields)))

    async def put_pending(self, token: str, job: Job, **kwargs: Any) -> None:
        await self.inner.put_pending(token, self.paths.job_in(job), **kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        @functools.wraps(attr)
        async def translated(*args: Any, **kwargs: Any) -> Any:
            return self.paths.results_out(await attr(*args, **kwargs))

        self.__dict__[name] = translated  # looked up once per method
        return translated
