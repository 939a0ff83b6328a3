"""Media paths in the store are relative to VIDEOBOT_MEDIA_DIR; in memory they are absolute.

Gateways and workers on several machines share one media volume, mounted wherever each
machine likes: a job row says `ab12cd34/video.mp4`, and each process reads it under its own
media directory. Rows written before this (absolute paths) are read as they are.

The store does the translation in its row mapping (`storage.rows`), when it is opened with a
media directory: every job going in (create, update, a confirmation waiting in the store) has
its media paths made relative, every job coming out has them made absolute again.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from storage.models import GenerateParams, Job

#: Job.state entries that hold a media path.
STATE_PATHS = ("image_step_path", "source_video", "source_image")
#: Job.state entries that map names to media paths.
STATE_PATH_MAPS = ("reuse_files",)
Translate = Callable[[str | None], str | None]


class MediaPaths:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        # Plain string work: this runs for every job read and written (no Path objects on the hot path).
        self._prefix = str(self.root).rstrip(os.sep) + os.sep

    def to_store(self, value: str | None) -> str | None:
        """A path under the media directory as a relative one; anything else unchanged."""
        if not value or not os.path.isabs(value):
            return value
        if value.startswith(self._prefix):
            return PurePosixPath(Path(value[len(self._prefix) :])).as_posix()
        try:  # not spelled like our root (a "..", a double slash): the slow, exact way
            return PurePosixPath(Path(value).relative_to(self.root)).as_posix()
        except ValueError:
            return value  # outside the media directory (an older row, a file the operator named)

    def from_store(self, value: str | None) -> str | None:
        """A stored path as this process sees it: relative ones under its media directory."""
        if not value or os.path.isabs(value):
            return value
        return self._prefix + value.replace("/", os.sep)

    def job_in(self, job: Job) -> Job:
        return _map_job(job, self.to_store)

    def job_out(self, job: Job) -> Job:
        return _map_job(job, self.from_store)

    def fields_in(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The fields of a store `update`, with their media paths made relative."""
        out = dict(fields)
        for name in ("output_path", "thumbnail_path"):
            if isinstance(out.get(name), str):
                out[name] = self.to_store(out[name])
        if isinstance(out.get("params"), GenerateParams):
            out["params"] = map_params(out["params"], self.to_store)
        if isinstance(out.get("state"), Mapping):
            out["state"] = map_state(out["state"], self.to_store)
        return out


def map_params(params: GenerateParams, fn: Translate) -> GenerateParams:
    if params.image_path and fn(params.image_path) != params.image_path:
        return params.model_copy(update={"image_path": fn(params.image_path)})
    return params


def map_state(state: Mapping[str, Any], fn: Translate) -> dict[str, Any]:
    plain = dict(state)
    for key in STATE_PATHS:
        if isinstance(plain.get(key), str):
            plain[key] = fn(plain[key])
    for key in STATE_PATH_MAPS:
        if isinstance(plain.get(key), dict):
            plain[key] = {k: fn(v) if isinstance(v, str) else v for k, v in plain[key].items()}
    return plain


def _map_job(job: Job, fn: Translate) -> Job:
    update: dict[str, Any] = {}
    for name in ("output_path", "thumbnail_path"):
        value = getattr(job, name)
        if value and fn(value) != value:
            update[name] = fn(value)
    params = map_params(job.params, fn)
    if params is not job.params:
        update["params"] = params
    state = map_state(job.state, fn)
    if state != dict(job.state):
        update["state"] = state  # made a JobState again by Job.model_copy
    return job.model_copy(update=update) if update else job
