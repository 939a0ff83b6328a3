"""A job as a row of the `jobs` table and back, for both backends: the columns, the JSON
blobs, the columns derived from the state, and the media-path translation (storage.media_paths).

A backend differs only in how a JSON column travels: SQLite stores text (`json.dumps` /
`json.loads`), PostgreSQL's jsonb codec hands Python values both ways (`json_text=False`).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from storage.media_paths import MediaPaths, map_state
from storage.models import Job, JobKind, JobState, JobStatus

ORIGIN_COLUMNS = ("platform", "workspace_id", "channel_id", "user_id", "status_message_id", "result_message_id")
PLAIN_COLUMNS = (
    "id", "parent_id", "kind", "prompt", "pipeline", "provider", "model", "remote_id", "status", "progress",
    "cost_estimate", "cost_actual", "output_path", "thumbnail_path", "error_code", "error_message",
    "created_at", "started_at", "finished_at", "updated_at", "deleted_at", "media_expired_at", "private",
)  # fmt: skip
#: Where adapters say what kind of place a conversation is ("direct", "private", "public").
PLACE = "place"
#: Columns that copy a state entry, for SQL that filters or sums on it (written with the state).
STATE_COLUMNS = ("story_scene", "image_step_cost", "take")
JSON_COLUMNS = ("origin_json", "params_json", "state_json")
#: Every column of a job row, as `videobot db copy` carries them.
JOB_COLUMNS = (*PLAIN_COLUMNS, *ORIGIN_COLUMNS, *JSON_COLUMNS, *STATE_COLUMNS, "lease_owner", "lease_until")
#: What `update(**fields)` may set directly (besides state, params, origin_extra).
UPDATABLE = frozenset(PLAIN_COLUMNS) - {"id", "created_at"} | {"status_message_id", "result_message_id"}


def plain_state(state: Mapping[str, Any] | JobState) -> dict[str, Any]:
    # A dict (what callers build: {**job.state, "k": v}) is taken as it is: its values are JSON already.
    return state.as_dict() if isinstance(state, JobState) else dict(state)


def state_columns(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"story_scene": state.get("story_scene"), "image_step_cost": state.get("image_step_cost"), "take": state.get("take")}


def enum_value(value: Any) -> Any:
    return value.value if isinstance(value, (JobStatus, JobKind)) else value


class RowMapper:
    def __init__(self, *, json_text: bool, paths: MediaPaths | None = None) -> None:
        self.json_text = json_text
        self.paths = paths

    def encode(self, value: Any) -> Any:
        return json.dumps(value) if self.json_text else value

    def decode(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) and self.json_text else value

    # --- in ------------------------------------------------------------------------------------------

    def to_row(self, job: Job) -> dict[str, Any]:
        if self.paths is not None:
            job = self.paths.job_in(job)
        row: dict[str, Any] = {col: enum_value(getattr(job, col)) for col in PLAIN_COLUMNS}
        # Made in a DM or a private channel (the adapter says so in origin.extra["place"]): private too.
        row["private"] = bool(job.private) or job.origin.extra.get(PLACE, "public") != "public"
        for col in ORIGIN_COLUMNS:
            row[col] = getattr(job.origin, col)
        state = plain_state(job.state)
        row["origin_json"] = self.encode({"extra": job.origin.extra, "user_name": job.origin.user_name})
        row["params_json"] = self.encode(job.params.model_dump(mode="json"))
        row["state_json"] = self.encode(state)
        row.update(state_columns(state))
        return row

    def update_values(self, fields: dict[str, Any]) -> list[tuple[str, Any]]:
        """`update(**fields)` as (column, value) pairs; origin_extra is left for the backend (a JSON
        path write). Raises KeyError for a field that is not updatable."""
        if self.paths is not None:
            fields = self.paths.fields_in(fields)
        out: list[tuple[str, Any]] = []
        for key, value in fields.items():
            if key == "state":
                state = plain_state(value)
                out.append(("state_json", self.encode(state)))
                out.extend(state_columns(state).items())
            elif key == "params":
                out.append(("params_json", self.encode(value.model_dump(mode="json"))))
            elif key == "origin_extra":
                out.append(("origin_extra", self.encode(value)))
            elif key in UPDATABLE:
                out.append((key, bool(value) if key == "private" else enum_value(value)))
            else:
                raise KeyError(f"not an updatable job field: {key}")
        return out

    def job_in(self, job: Job) -> Job:
        """A job as it is stored whole (a pending confirmation's job_json)."""
        return job if self.paths is None else self.paths.job_in(job)

    # --- out -----------------------------------------------------------------------------------------

    def from_row(self, record: Mapping[str, Any]) -> Job:
        # One validation of the whole job (a Rust call), hot: every read and every runner write ends here.
        data = dict(record)
        for extra in ("seq", "search", *STATE_COLUMNS):
            data.pop(extra, None)
        blob = self.decode(data.pop("origin_json")) or {}
        data["origin"] = {**{c: data.pop(c) for c in ORIGIN_COLUMNS}, "extra": blob.get("extra", {}), "user_name": blob.get("user_name")}
        data["params"] = params = self.decode(data.pop("params_json"))
        data["state"] = self.decode(data.pop("state_json")) or {}
        if self.paths is not None:
            data["state"] = map_state(data["state"], self.paths.from_store)
            if params.get("image_path"):
                data["params"] = {**params, "image_path": self.paths.from_store(params["image_path"])}
            for name in ("output_path", "thumbnail_path"):
                data[name] = self.paths.from_store(data.get(name))
        try:
            return Job.model_validate(data)
        except ValidationError:
            data["state"] = JobState.load(data["state"])  # a state an older videobot wrote: kept, not fatal
            return Job.model_validate(data)

    def job_out(self, job: Job) -> Job:
        return job if self.paths is None else self.paths.job_out(job)
