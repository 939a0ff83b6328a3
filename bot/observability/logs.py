"""Log lines as JSON (one object per line) or text, with the job they concern bound to them.

VIDEOBOT_LOG_FORMAT=json|text; empty: text on a terminal, JSON otherwise (a container's log
driver, journald, a file). The standard library's logging, one formatter: every logger of
the project and of the libraries goes through it.

A job's fields (job_id, tenant, pipeline, provider, state) are bound in a context variable when
the store writes the job (`bind_job`, called by the store observer in the task that drives
it), so every line that task logs afterwards carries them without each call passing them.
"""
from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

from bot.core.models import Job

#: The fields of the job the current task works on ({} outside a job).
_job: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("videobot_job", default={})

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def job_fields(job: Job) -> dict[str, str]:
    fields = {"job_id": job.id, "pipeline": job.pipeline, "state": job.status.value}
    if job.origin.platform:
        fields["tenant"] = f"{job.origin.platform}:{job.origin.workspace_id}" if job.origin.workspace_id else job.origin.platform
    if job.provider:
        fields["provider"] = job.provider
    return fields


def bind_job(job: Job) -> None:
    _job.set(job_fields(job))


def bound() -> dict[str, str]:
    return _job.get()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_job.get())
        extra = getattr(record, "job", None)
        if isinstance(extra, dict):
            line.update(extra)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def choose_format(setting: str, stream: Any = None) -> str:
    setting = (setting or "").strip().lower()
    if setting in ("json", "text"):
        return setting
    stream = stream if stream is not None else sys.stderr
    return "text" if getattr(stream, "isatty", lambda: False)() else "json"


def configure(setting: str, level: str | None = None) -> str:
    """Set the root handler's format (called once settings are read); returns the format chosen."""
    chosen = choose_format(setting)
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    formatter: logging.Formatter = JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT)
    for handler in root.handlers:
        handler.setFormatter(formatter)
    if level:
        root.setLevel(level.upper())
    return chosen
