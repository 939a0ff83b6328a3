"""The store contract written once: every read and every write of `storage.contract.Store`
over two primitives a backend provides, and the row mapping of `storage.rows`.

A backend (`storage.jobs.JobStore` for SQLite, `storage.pg.PgJobStore`) provides:

- `dialect` (storage.sql): how its SQL differs;
- `_read(sql, args)`: rows of a query (`?` placeholders, rendered by the dialect);
- `_run(write)`: a write script (storage.sql.Write) in one transaction, finished even if the
  caller is cancelled, its advisory locks taken first where the backend has them;
- `claim_queued`, `publish`, `wait_for_signal`, `close`: what truly differs (the claim's row
  locks, NOTIFY against polling).

Everything else is here, so a new backend is those few methods.
"""
from __future__ import annotations

import builtins
import json
import logging
import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from storage import spend
from storage.claims import Candidate, fair_order, user_key
from storage.errors import AlreadyFinished, LeaseLost
from storage.gallery import GalleryQuery, facets_sql, page_sql, viewer_filter
from storage.leases import HolderState, holder_state
from storage.models import (
    TERMINAL, Job, JobKind, JobOutcome, JobStatus, LeaseHolder, PendingSpend, QueueStats, RemoteRef, Signal, Spender, StatusTotal,
    WorkerRow,
)  # fmt: skip
from storage.rows import RowMapper
from storage.spend import QueueLimit, SpendLimit
from storage.sql import Dialect, Row, Script, Stmt, Where, Write

log = logging.getLogger(__name__)
_TERMINAL = [s.value for s in TERMINAL]


class JobEvent(dict[str, Any]):
    """One row of a job's history: at, status, progress, detail, runner (the lease owner that wrote it, or None)."""


class SqlStore:
    backend: str
    dialect: Dialect
    rows: RowMapper

    # --- what a backend provides ---------------------------------------------------------------
    async def _read(self, sql: str, args: Sequence[Any] = ()) -> builtins.list[Row]:
        raise NotImplementedError

    async def _run(self, write: Write) -> Any:
        raise NotImplementedError

    async def _script(self, make: Any, locks: Collection[str] = (), *, solo: bool = False) -> Any:
        """`solo`: the script writes with one statement (its other statements only read), so it
        needs no transaction of its own (PostgreSQL saves the BEGIN and COMMIT round trips)."""
        return await self._run(Write(make, frozenset(locks), solo))

    async def _jobs(self, tail: str, args: Sequence[Any] = ()) -> builtins.list[Job]:
        return [self.rows.from_row(r) for r in await self._read(f"SELECT * FROM jobs {tail}", args)]

    # --- writes ---------------------------------------------------------------------------------

    async def create(
        self, job: Job, *, lease_owner: str | None = None, lease_seconds: float | None = None,
        spend_limits: builtins.list[SpendLimit] | None = None, queue_limit: QueueLimit | None = None,
    ) -> Job:
        """Insert a new job (and its first event); with `lease_owner`, already leased to that runner.
        With `queue_limit`: QueueFull (nothing written) when the user has that many unfinished jobs.
        With `spend_limits`: the estimate is reserved against them in the same transaction
        (OverBudget, nothing written, when it would pass one)."""
        row = self.new_row(job, lease_owner, lease_seconds)
        d = self.dialect

        def script() -> Script[None]:
            if spend_limits or queue_limit is not None:
                yield from spend.check(d, spend_limits or [], job.cost_estimate or 0.0, queue=queue_limit)
            yield insert_job(row)
            yield insert_event(job.id, job.status, job.progress, None, job.created_at, lease_owner)

        await self._script(script, spend.locks(spend_limits, queue_limit))
        return job.model_copy(update={"lease_owner": row.get("lease_owner"), "lease_until": row.get("lease_until")})

    def new_row(self, job: Job, lease_owner: str | None, lease_seconds: float | None) -> dict[str, Any]:
        row = self.rows.to_row(job)
        if lease_owner is not None:
            row["lease_owner"] = lease_owner
            row["lease_until"] = time.time() + (lease_seconds or 60.0)
        return row

    async def update(
        self, job_id: str, *, detail: str | None = None, fence: str | None = None,
        spend_limits: builtins.list[SpendLimit] | None = None, by: str | None = None, **fields: Any,
    ) -> Job:
        """Write fields; a status change (or a `detail`) also appends an event. Returns the job as stored.

        `fence`: the lease owner the write is conditional on (the runner's writes). A write
        that changes `status` never overwrites a terminal state, whoever writes it.
        Raises LeaseLost / AlreadyFinished (KeyError: no such job) when the condition fails;
        nothing is written then. The event names its runner: `by`, else `fence`."""
        now = time.time()
        d = self.dialect
        sets, args = ["updated_at = ?"], [now]
        for column, value in self.rows.update_values(fields):
            if column == "origin_extra":
                sets.append(self.json_set_extra())
            else:
                sets.append(f"{column} = ?")
            args.append(value)
        status = fields.get("status")
        where = Where().add("id = ?", job_id)
        if fence is not None:
            where.add("lease_owner = ?", fence)
        if status is not None or fence is not None:
            where.extend(d.any("status", _TERMINAL, negate=True))
        update = Stmt(f"UPDATE jobs SET {', '.join(sets)} WHERE {where.sql} RETURNING *", [*args, *where.args])
        gated = bool(spend_limits) and fields.get("cost_estimate") is not None
        logged = status is not None or detail is not None
        # On PostgreSQL the row and its event in one statement (one round trip, no transaction needed).
        combined = d.with_event(update, now, detail, by or fence) if logged else update

        def script() -> Script[Job]:
            if gated:
                # A new price for a running job (a fallback hop): the others' spend plus the new estimate.
                yield from spend.check(d, spend_limits or [], float(fields["cost_estimate"]), excluding=job_id)
            stored = yield (combined or update)
            if not stored:
                yield from explain_refusal(job_id, fence)
            if logged and combined is None:
                yield insert_event(job_id, JobStatus(stored[0]["status"]), stored[0]["progress"], detail, now, by or fence)
            return self.rows.from_row(stored[0])

        result: Job = await self._script(script, spend.locks(spend_limits) if gated else (), solo=not gated and combined is not None)
        return result

    def json_set_extra(self) -> str:
        """The SET fragment that replaces origin_json's `extra` with one argument."""
        if self.dialect.name == "sqlite":
            return "origin_json = json_set(origin_json, '$.extra', json(?))"
        return "origin_json = jsonb_set(origin_json, '{extra}', ?::jsonb)"

    async def add_event(self, job_id: str, detail: str, *, by: str | None = None) -> None:
        """A line in the job's history that changes nothing else (a note after the end)."""

        def script() -> Script[None]:
            yield Stmt(
                "INSERT INTO job_events (job_id, at, status, progress, detail, runner) "
                "SELECT id, ?, status, progress, ?, ? FROM jobs WHERE id = ?",
                (time.time(), detail, by, job_id),
            )

        await self._script(script, solo=True)

    async def set_progress(self, job_id: str, progress: int, *, fence: str | None = None, by: str | None = None) -> None:
        # Progress ticks are not history: no event row (`by` is accepted for symmetry).
        where = Where().add("id = ?", job_id)
        if fence is not None:
            where.add("lease_owner = ?", fence).extend(self.dialect.any("status", _TERMINAL, negate=True))
        sql = f"UPDATE jobs SET progress = ?, updated_at = ? WHERE {where.sql} RETURNING id"

        def script() -> Script[None]:
            if not (yield Stmt(sql, [progress, time.time(), *where.args])):
                yield from explain_refusal(job_id, fence)

        await self._script(script, solo=True)

    async def reopen_delivery(self, job_id: str, detail: str, *, by: str | None = None) -> Job:
        """A completed job whose result could not be posted goes back to `delivering`
        (`videobot redeliver`); the only move out of a terminal state there is."""

        def script() -> Script[Job]:
            now = time.time()
            stored = yield Stmt(
                "UPDATE jobs SET status = ?, error_code = NULL, error_message = NULL, finished_at = NULL, updated_at = ? "
                "WHERE id = ? AND status = ? AND error_code = 'undelivered' AND output_path IS NOT NULL RETURNING *",
                (JobStatus.DELIVERING.value, now, job_id, JobStatus.COMPLETED.value),
            )
            if not stored:
                raise AlreadyFinished(job_id, "not a completed job waiting for delivery")
            yield insert_event(job_id, JobStatus.DELIVERING, 100, detail, now, by)
            return self.rows.from_row(stored[0])

        result: Job = await self._script(script)
        return result

    # --- leases: one runner owns a job at a time, across processes -------------------------------

    async def claim(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        """Take the job's lease if it is free, ours, expired, or held by a process that is gone."""
        d = self.dialect

        def script() -> Script[bool]:
            # Read and set in one transaction (a row lock on PostgreSQL): two runners cannot both take it.
            rows = yield Stmt(f"SELECT status, lease_owner, lease_until FROM jobs WHERE id = ?{d.for_update}", (job_id,))
            if not rows or JobStatus(rows[0]["status"]) in TERMINAL:
                return False
            current = rows[0]["lease_owner"]
            state = holder_state(current, rows[0]["lease_until"])
            if current is not None and current != owner and state is HolderState.ALIVE:
                return False
            yield Stmt("UPDATE jobs SET lease_owner = ?, lease_until = ? WHERE id = ?", (owner, time.time() + lease_seconds, job_id))
            if current is not None and current != owner:
                log.info("job %s: took over the lease from %s (%s)", job_id, current, state)
            return True

        taken: bool = await self._script(script)
        return taken

    async def renew(self, owner: str, job_ids: Sequence[str], lease_seconds: float) -> set[str]:
        """Extend our leases; returns the ids we still hold (a missing one was lost or finished)."""
        ids = list(job_ids)
        if not ids:
            return set()

        def script() -> Script[set[str]]:
            held: set[str] = set()
            for start in range(0, len(ids), 500):
                match, args = self.dialect.any("id", ids[start : start + 500])
                rows = yield Stmt(
                    f"UPDATE jobs SET lease_until = ? WHERE lease_owner = ? AND {match} RETURNING id", (time.time() + lease_seconds, owner, *args)
                )
                held.update(r["id"] for r in rows)
            return held

        # Each chunk's UPDATE stands on its own (a lease renewed is renewed): no transaction needed.
        result: set[str] = await self._script(script, solo=True)
        return result

    async def release(self, owner: str, job_ids: Sequence[str] | None = None) -> None:
        ids = None if job_ids is None else list(job_ids)
        if ids == []:
            return
        where = Where().add("lease_owner = ?", owner)
        if ids is not None:
            where.extend(self.dialect.any("id", ids))

        def script() -> Script[None]:
            yield Stmt(f"UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE {where.sql}", where.args)

        await self._script(script, solo=True)

    # --- reads ----------------------------------------------------------------------------------

    async def get(self, job_id: str, *, viewer_user: str | None = None, viewer_admin: bool = True) -> Job | None:
        """The job; with a viewer who is not an admin, None for someone else's private job."""
        where = viewer_filter(Where().add("id = ?", job_id), viewer_user=viewer_user, viewer_admin=viewer_admin)
        jobs = await self._jobs(f"WHERE {where.sql}", where.args)
        return jobs[0] if jobs else None

    async def find_prefix(
        self, prefix: str, limit: int = 2, *, platform: str | None = None, workspace_id: str | None = None, scoped: bool = False,
        viewer_user: str | None = None, viewer_admin: bool = True,
    ) -> builtins.list[Job]:
        """Jobs whose id starts with `prefix`; `scoped`: only those of (platform, workspace_id)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where = Where().add("id LIKE ? ESCAPE '\\'", escaped)
        if scoped:
            where.add("platform = ?", platform).add(self.dialect.same("workspace_id"), workspace_id)
        viewer_filter(where, viewer_user=viewer_user, viewer_admin=viewer_admin)
        return await self._jobs(f"WHERE {where.sql} ORDER BY {self.dialect.seq} LIMIT ?", [*where.args, limit])

    async def list(
        self, *, platform: str | None = None, user_id: str | None = None, statuses: Iterable[JobStatus] | None = None,
        include_deleted: bool = False, limit: int = 20, viewer_user: str | None = None, viewer_admin: bool = True,
    ) -> builtins.list[Job]:
        """Newest first. With a viewer who is not an admin, others' private jobs are left out."""
        where = Where()
        if platform is not None:
            where.add("platform = ?", platform)
        if user_id is not None:
            where.add("user_id = ?", user_id)
        if statuses is not None:
            where.extend(self.dialect.any("status", [s.value for s in statuses]))
        if not include_deleted:
            where.add("deleted_at IS NULL")
        viewer_filter(where, viewer_user=viewer_user, viewer_admin=viewer_admin)
        return await self._jobs(f"WHERE {where.sql} ORDER BY created_at DESC, {self.dialect.seq} DESC LIMIT ?", [*where.args, limit])

    async def unfinished(self, platforms: Iterable[str] | None = None) -> builtins.list[Job]:
        """Every non-terminal job, oldest first: what a starting runner must resume."""
        where = Where().extend(self.dialect.any("status", _TERMINAL, negate=True))
        if platforms is not None:
            where.extend(self.dialect.any("platform", list(platforms)))
        return await self._jobs(f"WHERE {where.sql} ORDER BY created_at, {self.dialect.seq}", where.args)

    async def find_by_message(
        self, platform: str, message_id: str, *, viewer_user: str | None = None, viewer_admin: bool = True
    ) -> Job | None:
        where = Where().add("platform = ? AND (status_message_id = ? OR result_message_id = ?)", platform, message_id, message_id)
        viewer_filter(where, viewer_user=viewer_user, viewer_admin=viewer_admin)
        jobs = await self._jobs(f"WHERE {where.sql} ORDER BY created_at DESC LIMIT 1", where.args)
        return jobs[0] if jobs else None

    async def with_status(self, job_ids: Sequence[str], status: JobStatus) -> builtins.list[Job]:
        """Those of `job_ids` now in `status` (one query, however many ids)."""
        if not job_ids:
            return []
        where = Where().add("status = ?", status.value).extend(self.dialect.any("id", list(job_ids)))
        return await self._jobs(f"WHERE {where.sql} ORDER BY {self.dialect.seq}", where.args)

    async def media_to_expire(self, finished_before: float, limit: int = 500) -> builtins.list[Job]:
        """Finished jobs older than the retention window whose files are still on disk."""
        where = Where().extend(self.dialect.any("status", _TERMINAL))
        where.add("finished_at < ? AND media_expired_at IS NULL AND deleted_at IS NULL", finished_before)
        return await self._jobs(f"WHERE {where.sql} ORDER BY finished_at LIMIT ?", [*where.args, limit])

    async def remote_ids_since(self, since: float, *, excluding: str) -> builtins.list[str]:
        """Remote ids of jobs created since `since`, other than `excluding` (what a lookup must not adopt)."""
        rows = await self._read(
            f"SELECT remote_id, {self.dialect.json_text('state_json', 'failed_remote_ids')} AS failed FROM jobs "
            f"WHERE created_at >= ? AND id <> ? AND (remote_id IS NOT NULL OR {self.dialect.json_text('state_json', 'failed_remote_ids')} IS NOT NULL) "
            f"ORDER BY {self.dialect.seq}",
            (since, excluding),
        )
        ids = [r["remote_id"] for r in rows if r["remote_id"] is not None]
        for r in rows:
            failed = json.loads(r["failed"]) if r["failed"] else None
            if isinstance(failed, builtins.list):
                ids.extend(failed)
        return ids

    async def gallery(self, query: GalleryQuery) -> builtins.list[Job]:
        """One page of the gallery (storage.gallery): newest first, filtered, searched, after `query.before`."""
        tail, args = page_sql(self.dialect, query)
        return await self._jobs(tail, args)

    async def gallery_facets(self, query: GalleryQuery) -> dict[str, builtins.list[tuple[str, str | None]]]:
        """What the gallery's filters offer in the query's scope: users as (id, display name),
        channels and pipelines as (value, None)."""
        found: dict[str, builtins.list[tuple[str, str | None]]] = {}
        for name, (sql, args) in facets_sql(self.dialect, query).items():
            found[name] = [(r[0], r[1] if len(r) > 1 else None) for r in await self._read(sql, args)]
        return found

    async def children(self, job_id: str) -> builtins.list[Job]:
        return await self._jobs(f"WHERE parent_id = ? ORDER BY created_at, {self.dialect.seq}", (job_id,))

    async def events(self, job_id: str) -> builtins.list[JobEvent]:
        rows = await self._read("SELECT at, status, progress, detail, runner FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))
        return [JobEvent(dict(r)) for r in rows]

    async def count(self, *, statuses: Iterable[JobStatus], platform: str | None = None, user_id: str | None = None) -> int:
        where = Where().extend(self.dialect.any("status", [s.value for s in statuses]))
        if platform is not None:
            where.add("platform = ? AND user_id = ?", platform, user_id)
        rows = await self._read(f"SELECT COUNT(*) AS n FROM jobs WHERE {where.sql}", where.args)
        return int(rows[0]["n"])

    # --- settings and confirmations ---------------------------------------------------------------

    async def settings_rows(self, platform: str, workspace_id: str | None) -> builtins.list[tuple[str, str, str, Any]]:
        """(scope, scope_id, key, value) of one tenant: its own, its channels' and its users'."""
        rows = await self._read(
            "SELECT scope, scope_id, key, value_json FROM settings WHERE platform = ? AND workspace_id = ?", (platform, workspace_id or "")
        )
        return [(r["scope"], r["scope_id"], r["key"], self.rows.decode(r["value_json"])) for r in rows]

    async def put_setting(
        self, platform: str, workspace_id: str | None, scope: str, scope_id: str, key: str, value: Any, *, by: str
    ) -> None:
        keys = (platform, workspace_id or "", scope, scope_id, key)

        def script() -> Script[None]:
            if value is None:
                yield Stmt("DELETE FROM settings WHERE platform = ? AND workspace_id = ? AND scope = ? AND scope_id = ? AND key = ?", keys)
                return
            yield Stmt(
                "INSERT INTO settings (platform, workspace_id, scope, scope_id, key, value_json, updated_by, updated_at) "
                f"VALUES (?, ?, ?, ?, ?, {self.json_param()}, ?, ?) ON CONFLICT (platform, workspace_id, scope, scope_id, key) "
                "DO UPDATE SET value_json = excluded.value_json, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                (*keys, self.rows.encode(value), by, time.time()),
            )

        await self._script(script, solo=True)

    def json_param(self) -> str:
        return "?" if self.dialect.name == "sqlite" else "?::jsonb"

    async def put_pending(self, token: str, job: Job, *, expires_at: float) -> None:
        stored = self.rows.job_in(job)

        def script() -> Script[None]:
            yield Stmt(
                "INSERT INTO pending_spends (token, platform, user_id, job_json, estimate, created_at, expires_at) "
                f"VALUES (?, ?, ?, {self.json_param()}, ?, ?, ?)",
                (token, job.origin.platform, job.origin.user_id, self.rows.encode(stored.model_dump(mode="json")),
                 job.cost_estimate or 0.0, time.time(), expires_at),
            )  # fmt: skip

        await self._script(script, solo=True)

    def _pending_job(self, value: Any) -> Job:
        return self.rows.job_out(Job.model_validate(self.rows.decode(value)))

    async def peek_pending(self, token: str) -> PendingSpend | None:
        """A pending spend as it stands, without taking it (what an Edit form starts from)."""
        rows = await self._read(
            "SELECT token, platform, user_id, job_json, estimate, created_at, expires_at, state FROM pending_spends WHERE token = ?", (token,)
        )
        if not rows:
            return None
        data = dict(rows[0])
        return PendingSpend(job=self._pending_job(data.pop("job_json")), **data)

    async def take_pending(self, token: str, *, to: str, platform: str, user_id: str) -> tuple[Job | None, str]:
        """Move a pending spend of this user out of `pending` (to `confirmed` or `cancelled`), once.
        Returns its job and the state it was in (`pending`, `expired`, ..., `missing`, `not_owner`)."""

        def script() -> Script[tuple[Job | None, str]]:
            # Locked on PostgreSQL: two processes taking one token at once are served one after the other.
            rows = yield Stmt(
                f"SELECT job_json, state, expires_at, platform, user_id FROM pending_spends WHERE token = ?{self.dialect.for_update}", (token,)
            )
            if not rows:
                return None, "missing"
            row = rows[0]
            answer, write_state = spend.pending_answer(
                row_platform=row["platform"], row_user=row["user_id"], state=row["state"], expires_at=row["expires_at"],
                platform=platform, user_id=user_id, to=to, now=time.time(),
            )  # fmt: skip
            if write_state is not None:
                yield Stmt("UPDATE pending_spends SET state = ? WHERE token = ?", (write_state, token))
            return (None if answer == "missing" else self._pending_job(row["job_json"])), answer

        result: tuple[Job | None, str] = await self._script(script)
        return result

    # --- spending and outcomes --------------------------------------------------------------------

    async def spend_since(
        self, *, platform: str, since: float, user_id: str | None = None, workspace_id: str | None = None
    ) -> float:
        """What the jobs of a platform (one user's, one workspace's) created since `since` count."""
        sql, args = spend.spent_query(platform, since, user_id=user_id, workspace_id=workspace_id)
        rows = await self._read(sql, args)
        return round(float(rows[0][0]), 6)

    async def top_spenders(self, *, since: float, user_id: str | None = None) -> builtins.list[Spender]:
        """What each user spent since `since` (per platform and workspace), dearest first."""
        where = Where().add("created_at >= ?", since)
        if user_id is not None:
            where.add("user_id = ?", user_id)
        rows = await self._read(
            f"SELECT platform, user_id, workspace_id, COUNT(*) AS jobs, COALESCE(SUM({spend.COST_SQL}), 0) AS spent FROM jobs "
            f"WHERE {where.sql} GROUP BY platform, user_id, workspace_id ORDER BY 5 DESC, {self.dialect.ordered('platform')}, "
            f"{self.dialect.ordered('user_id')}",
            where.args,
        )
        return [Spender(platform=r[0], user_id=r[1], workspace_id=r[2], jobs=int(r[3]), spent=float(r[4])) for r in rows]

    async def job_outcomes(
        self, *, since: float, exclude_kinds: Collection[JobKind] = (), platform: str | None = None,
        workspace_id: str | None = None, scoped: bool = False, include_scenes: bool = True,
    ) -> builtins.list[JobOutcome]:
        """Every job created since `since` (but those of `exclude_kinds`), by pipeline, with what it
        cost. `scoped`: one tenant's (platform and workspace, None matching None). Without
        `include_scenes` a story's scenes are left out (their story counts for them)."""
        d = self.dialect
        where = Where().add("created_at >= ?", since)
        if exclude_kinds:
            where.extend(d.any("kind", [k.value for k in exclude_kinds], negate=True))
        if scoped:
            where.add(f"platform = ? AND {d.same('workspace_id')}", platform, workspace_id)
        if not include_scenes:
            where.add("story_scene IS NULL AND take IS NULL")
        rows = await self._read(
            f"SELECT pipeline, status, created_at, finished_at, {spend.COST_SQL} AS cost, "
            f"COALESCE({d.json_number('state_json', 'gpu_seconds')}, 0) AS gpu, user_id, {d.json_text('origin_json', 'user_name')} AS name, "
            f"{d.json_text('state_json', 'ab', 'split')} AS split, {d.json_text('state_json', 'ab', 'arm')} AS arm "
            f"FROM jobs WHERE {where.sql} ORDER BY pipeline, created_at",
            where.args,
        )
        return [
            JobOutcome(
                pipeline=r[0], status=JobStatus(r[1]), created_at=r[2], finished_at=r[3], cost=float(r[4] or 0),
                gpu_seconds=float(r[5] or 0), user_id=r[6], user_name=_text(r[7]), ab_split=_text(r[8]), ab_arm=_text(r[9]),
            )  # fmt: skip
            for r in rows
        ]

    async def remote_jobs(
        self, *, platform: str | None = None, workspace_id: str | None = None, scoped: bool = False,
        provider: str | None = None, remote_id: str | None = None, limit: int = 500,
    ) -> builtins.list[RemoteRef]:
        """Jobs with a provider-side id, newest first: all, one tenant's (`scoped`), one provider's,
        or the one with `remote_id`."""
        where = Where("remote_id IS NOT NULL")
        if scoped:
            where.add(f"platform = ? AND {self.dialect.same('workspace_id')}", platform, workspace_id)
        if provider is not None:
            where.add("provider = ?", provider)
        if remote_id is not None:
            where.add("remote_id = ?", remote_id)
        rows = await self._read(
            f"SELECT remote_id, id, status FROM jobs WHERE {where.sql} ORDER BY created_at DESC, {self.dialect.seq} DESC LIMIT ?",
            [*where.args, limit],
        )
        return [RemoteRef(remote_id=r[0], job_id=r[1], status=JobStatus(r[2])) for r in rows]

    async def lease_holders(self) -> builtins.list[LeaseHolder]:
        """Who holds leases on unfinished jobs, most jobs first."""
        where = Where("lease_owner IS NOT NULL").extend(self.dialect.any("status", _TERMINAL, negate=True))
        rows = await self._read(
            f"SELECT lease_owner, COUNT(*), MAX(lease_until) FROM jobs WHERE {where.sql} GROUP BY lease_owner "
            f"ORDER BY 2 DESC, {self.dialect.ordered('lease_owner')}",
            where.args,
        )
        return [LeaseHolder(owner=r[0], jobs=int(r[1]), until=r[2]) for r in rows]

    # --- signals ------------------------------------------------------------------------------------

    async def signals_after(self, cursor: int, limit: int = 500) -> builtins.list[Signal]:
        rows = await self._read("SELECT id, job_id, kind, payload_json, at FROM job_signals WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit))
        return [Signal(id=r[0], job_id=r[1], kind=r[2], payload=self.rows.decode(r[3]) or {}, at=r[4]) for r in rows]

    async def last_signal_id(self) -> int:
        rows = await self._read("SELECT COALESCE(MAX(id), 0) FROM job_signals")
        return int(rows[0][0])

    async def prune_signals(self, older_than: float) -> int:
        def script() -> Script[int]:
            return len((yield Stmt("DELETE FROM job_signals WHERE at < ? RETURNING id", (older_than,))))

        removed: int = await self._script(script, solo=True)
        return removed

    # --- workers and the queue --------------------------------------------------------------------

    async def heartbeat(self, worker_id: str, *, host: str, pid: int, role: str, started_at: float, held: int) -> None:
        def script() -> Script[None]:
            yield Stmt(
                "INSERT INTO workers (id, host, pid, role, started_at, last_seen, held) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, role = excluded.role, "
                "started_at = excluded.started_at, last_seen = excluded.last_seen, held = excluded.held",
                (worker_id, host, pid, role, started_at, time.time(), held),
            )

        await self._script(script, solo=True)

    async def workers(self) -> builtins.list[WorkerRow]:
        rows = await self._read("SELECT id, host, pid, role, started_at, last_seen, held FROM workers ORDER BY started_at, id")
        return [WorkerRow(**dict(r)) for r in rows]

    async def drop_worker(self, worker_id: str) -> None:
        def script() -> Script[None]:
            yield Stmt("DELETE FROM workers WHERE id = ?", (worker_id,))

        await self._script(script, solo=True)

    async def queue_stats(self, platforms: Collection[str] | None = None) -> QueueStats:
        """Queued jobs (how many, the oldest's created_at) and running ones (past the queue, not finished)."""
        where = Where().extend(self.dialect.any("status", _TERMINAL, negate=True))
        if platforms is not None:
            where.extend(self.dialect.any("platform", list(platforms)))
        rows = await self._read(
            "SELECT COALESCE(SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END), 0), MIN(CASE WHEN status = 'queued' THEN created_at END), "
            f"COALESCE(SUM(CASE WHEN status <> 'queued' THEN 1 ELSE 0 END), 0) FROM jobs WHERE {where.sql}",
            where.args,
        )
        row = rows[0]
        return QueueStats(queued=int(row[0]), oldest_queued_at=row[1], running=int(row[2]))

    async def unfinished_by_status(self) -> builtins.list[StatusTotal]:
        """Per unfinished status: jobs, estimates reserved (not a story's scenes), oldest created_at.
        One aggregate query, for the metrics' scrape."""
        where = Where().extend(self.dialect.any("status", _TERMINAL, negate=True))
        rows = await self._read(
            "SELECT status, COUNT(*), COALESCE(SUM(CASE WHEN story_scene IS NULL THEN COALESCE(cost_estimate, 0) ELSE 0 END), 0), "
            f"MIN(created_at) FROM jobs WHERE {where.sql} GROUP BY status ORDER BY status",
            where.args,
        )
        return [StatusTotal(status=r[0], jobs=int(r[1]), reserved_usd=round(float(r[2]), 6), oldest_created_at=r[3]) for r in rows]

    def claim_read(self, names: builtins.list[str] | None, now: float, *, depth: int | None = None, passed: Sequence[str] = ()) -> Stmt:
        """One read for a claim (and the queue's order): what every user has taken (unfinished
        jobs with a live lease, any runner's) and the waiting jobs no runner holds, each user's
        oldest `depth` at most (a user's k-th can be picked only after their first k-1)."""
        d = self.dialect
        taken = Where().extend(d.any("status", _TERMINAL, negate=True)).add("lease_owner IS NOT NULL AND lease_until > ?", now)
        free = Where().add("status = ? AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= ?)", JobStatus.QUEUED.value, now)
        if names is not None:
            free.extend(d.any("platform", names))
        if passed:
            free.extend(d.any("id", passed, negate=True))
        rank = Where() if depth is None else Where().add("rank <= ?", depth)
        return Stmt(
            "SELECT 'taken' AS kind, NULL AS id, platform, workspace_id, user_id, CAST(COUNT(*) AS DOUBLE PRECISION) AS x, 0 AS seq "
            f"FROM jobs WHERE {taken.sql} GROUP BY platform, workspace_id, user_id "
            "UNION ALL SELECT 'queued', id, platform, workspace_id, user_id, created_at, seq FROM ("
            f"SELECT id, platform, workspace_id, user_id, created_at, {d.seq} AS seq, ROW_NUMBER() OVER "
            f"(PARTITION BY platform, workspace_id, user_id ORDER BY created_at, {d.seq}) AS rank FROM jobs WHERE {free.sql}) c "
            f"WHERE {rank.sql} ORDER BY kind, x, seq",
            [*taken.args, *free.args, *rank.args],
        )

    @staticmethod
    def claim_figures(rows: builtins.list[Row]) -> tuple[dict[str, int], builtins.list[Candidate]]:
        """`claim_read`'s rows as (taken per user, candidates in order)."""
        taken: dict[str, int] = {}
        candidates: builtins.list[Candidate] = []
        for r in rows:
            key = user_key(r["platform"], r["workspace_id"], r["user_id"])
            if r["kind"] == "taken":
                taken[key] = int(r["x"])
            else:
                candidates.append(Candidate(r["id"], key, r["x"]))
        return taken, candidates

    async def queue_order(self, platforms: Collection[str] | None = None) -> builtins.list[str]:
        """The queued jobs no runner holds yet, in the order the workers' claims will start them
        (storage.claims.fair_order: what each user has taken counts, as in `claim_queued`)."""
        names = None if platforms is None else builtins.list(platforms)
        if names == []:
            return []
        read = self.claim_read(names, time.time())
        taken, candidates = self.claim_figures(await self._read(read.sql, read.args))
        return fair_order(candidates, taken)


def insert_job(row: dict[str, Any]) -> Stmt:
    return Stmt(f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", tuple(row.values()))


def insert_event(
    job_id: str, status: JobStatus, progress: int | None, detail: str | None, at: float, runner: str | None = None
) -> Stmt:
    return Stmt(
        "INSERT INTO job_events (job_id, at, status, progress, detail, runner) VALUES (?, ?, ?, ?, ?, ?)",
        (job_id, at, status.value, progress, detail, runner),
    )


def explain_refusal(job_id: str, fence: str | None) -> Script[None]:
    """Why a conditional write matched no row: raises KeyError, AlreadyFinished or LeaseLost."""
    rows = yield Stmt("SELECT status, lease_owner FROM jobs WHERE id = ?", (job_id,))
    if not rows:
        raise KeyError(job_id)
    if JobStatus(rows[0]["status"]) in TERMINAL:
        raise AlreadyFinished(job_id, f"already {rows[0]['status']}")
    raise LeaseLost(job_id, f"lease now held by {rows[0]['lease_owner']}, not {fence}")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
