"""The web gallery's read: one page of jobs, newest first, filtered, searched, keyset-paged.
Written once for both dialects (storage.sql.Dialect spells search and id order).

- Scope: `platform`/`workspace_id` when `scoped` (one tenant: both must match, a None
  workspace matching only None), every tenant when not (the operator).
- Viewer: a private job (`jobs.private`) is shown only to its owner (`viewer_user`, on the
  query's platform) and to admins (`viewer_admin`). By default nobody is an admin and nobody
  owns anything, so a caller that names no viewer sees no private job.
- Always left out: deleted jobs (`deleted_at` set) and story scenes (`story_scene` set: they
  are shown on their story's page, not as videos of their own).
- Filters, each only when given: `user_id`, `channel_id`, `pipeline`, `status` (exact),
  `since` <= created_at < `until` (epoch seconds), `kind`.
- `search`: the words of a free text (letters and digits, at most 8), each a prefix
  (`kit` finds "kites"), all required, stemmed (porter on SQLite, 'english' on PostgreSQL).
- Order `created_at DESC, id DESC` (ids bytewise); `before` = (created_at, id) of the last job
  of the previous page: the next page holds jobs strictly after it in that order. At most `limit`.
- Facets (`gallery_facets`): the distinct user ids (each with the user_name of its newest
  job), channel ids (not null) and pipelines of the scope, sorted, at most 500 each; every
  job of the scope the viewer may see counts (deleted ones and scenes too).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.search import MAX_SEARCH_WORDS, fts_match, search_words
from storage.sql import Dialect, Where

__all__ = ["MAX_SEARCH_WORDS", "GalleryQuery", "fts_match", "search_words"]



@dataclass(frozen=True)
class GalleryQuery:
    platform: str | None = None
    workspace_id: str | None = None
    #: False: every tenant (the operator's view); True: only platform + workspace_id.
    scoped: bool = True
    user_id: str | None = None
    channel_id: str | None = None
    pipeline: str | None = None
    status: str | None = None
    kind: str | None = None
    since: float | None = None
    until: float | None = None
    search: str | None = None
    #: Keyset cursor: (created_at, id) of the last job already shown.
    before: tuple[float, str] | None = None
    limit: int = 24
    #: Who looks: private jobs are shown to their owner and to admins only.
    viewer_user: str | None = None
    viewer_admin: bool = False


def viewer_filter(where: Where, *, viewer_user: str | None, viewer_admin: bool) -> Where:
    """Not an admin: leave out the private jobs of others (`viewer_user` owns its own)."""
    if not viewer_admin:
        if viewer_user is None:
            where.add("private = ?", False)
        else:
            where.add("(private = ? OR user_id = ?)", False, viewer_user)
    return where


def _scope(d: Dialect, query: GalleryQuery) -> Where:
    where = Where()
    if query.scoped:
        where.add("platform = ?", query.platform)
        if query.workspace_id is None:
            where.add("workspace_id IS NULL")
        else:
            where.add("workspace_id = ?", query.workspace_id)
    return where


def where(d: Dialect, query: GalleryQuery) -> Where:
    clauses = _scope(d, query)
    clauses.parts[:0] = ["deleted_at IS NULL", "story_scene IS NULL", "take IS NULL"]
    viewer_filter(clauses, viewer_user=query.viewer_user, viewer_admin=query.viewer_admin)
    if query.scoped and query.viewer_admin:
        # A direct conversation (a DM, an IM) is its owner's own tenant: a workspace's admins do not see it.
        clauses.add(f"(private = ? OR user_id = ? OR COALESCE({d.json_text('origin_json', 'extra', 'place')}, '') <> 'direct')",
                    False, query.viewer_user or "")  # fmt: skip
    for column in ("user_id", "channel_id", "pipeline", "status", "kind"):
        value = getattr(query, column)
        if value is not None:
            clauses.add(f"{column} = ?", value)
    if query.since is not None:
        clauses.add("created_at >= ?", query.since)
    if query.until is not None:
        clauses.add("created_at < ?", query.until)
    search = d.search(query.search)
    if search is not None:
        clauses.extend(search)
    return clauses


def page_sql(d: Dialect, query: GalleryQuery) -> tuple[str, list[Any]]:
    clauses = where(d, query)
    if query.before is not None:
        at, job_id = query.before
        clauses.add(f"(created_at < ? OR (created_at = ? AND {d.ordered('id')} < ?))", at, at, job_id)
    return (
        f"WHERE {clauses.sql} ORDER BY created_at DESC, {d.ordered('id')} DESC LIMIT ?",
        [*clauses.args, max(1, min(query.limit, 500))],
    )


def facets_sql(d: Dialect, query: GalleryQuery) -> dict[str, tuple[str, list[Any]]]:
    """Distinct users (with their latest display name), channels and pipelines in the query's scope
    (every job of the tenant counts, deleted ones and scenes too: these are the filters' choices)."""
    scope = viewer_filter(_scope(d, query), viewer_user=query.viewer_user, viewer_admin=query.viewer_admin)
    clause, args = scope.sql, scope.args
    name = (
        f"(SELECT {d.json_text('n.origin_json', 'user_name')} FROM jobs n WHERE n.platform = u.platform "
        "AND n.user_id = u.user_id ORDER BY n.created_at DESC LIMIT 1)"
    )
    return {
        "users": (
            f"SELECT u.user_id, {name} FROM (SELECT DISTINCT platform, user_id FROM jobs WHERE {clause}) u "
            f"ORDER BY {d.ordered('u.user_id')} LIMIT 500",
            args,
        ),
        "channels": (
            f"SELECT DISTINCT {d.ordered('channel_id')} FROM jobs WHERE {clause} AND channel_id IS NOT NULL ORDER BY 1 LIMIT 500",
            args,
        ),
        "pipelines": (f"SELECT DISTINCT {d.ordered('pipeline')} FROM jobs WHERE {clause} ORDER BY 1 LIMIT 500", args),
    }
