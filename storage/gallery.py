"""The web gallery's read: one page of jobs, newest first, filtered, searched, keyset-paged.

The contract (a PostgreSQL store mirrors it; see `JobStore.gallery`):

- Scope: `platform`/`workspace_id` when `scoped` (one tenant: both must match, a None
  workspace matching only None), every tenant when not (the operator).
- Always left out: deleted jobs (`deleted_at` set) and story scenes (`state.story_scene`
  set: they are shown on their story's page, not as videos of their own).
- Filters, each only when given: `user_id`, `channel_id`, `pipeline`, `status` (exact),
  `since` <= created_at < `until` (epoch seconds), `kind`.
- `search`: the words of a free text (letters and digits, at most 8), each a prefix
  (`kit` finds "kites"), all required, stemmed (porter here, 'english' on PostgreSQL).
- Order `created_at DESC, id DESC`; `before` = (created_at, id) of the last job of the
  previous page: the next page holds jobs strictly after it in that order. At most `limit`.
- Facets (`JobStore.gallery_facets`): the distinct user ids (each with the user_name of its
  newest job), channel ids (not null) and pipelines of the scope, sorted, at most 500 each;
  every job of the scope counts (deleted ones and scenes too).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: Words of a search, at most this many (a longer text is cut, not refused).
MAX_SEARCH_WORDS = 8
_WORD = re.compile(r"\w+", re.UNICODE)


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


def search_words(text: str | None) -> list[str]:
    return _WORD.findall(text or "")[:MAX_SEARCH_WORDS]


def fts_match(text: str | None) -> str | None:
    """A user's search text as an FTS5 query: each word quoted (no operators get through) and a prefix."""
    words = search_words(text)
    if not words:
        return None
    return " ".join('"' + w.replace('"', '""') + '"*' for w in words)


def where(query: GalleryQuery) -> tuple[str, list[Any]]:
    """The WHERE clause (without the word) and its arguments, shared by the page and the facets."""
    clauses = ["deleted_at IS NULL", "json_extract(state_json, '$.story_scene') IS NULL", "json_extract(state_json, '$.take') IS NULL"]
    args: list[Any] = []
    if query.scoped:
        clauses.append("platform = ?")
        args.append(query.platform)
        if query.workspace_id is None:
            clauses.append("workspace_id IS NULL")
        else:
            clauses.append("workspace_id = ?")
            args.append(query.workspace_id)
    for column in ("user_id", "channel_id", "pipeline", "status", "kind"):
        value = getattr(query, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if query.since is not None:
        clauses.append("created_at >= ?")
        args.append(query.since)
    if query.until is not None:
        clauses.append("created_at < ?")
        args.append(query.until)
    match = fts_match(query.search)
    if match is not None:
        clauses.append("id IN (SELECT job_id FROM jobs_fts WHERE jobs_fts MATCH ?)")
        args.append(match)
    return " AND ".join(clauses), args


def page_sql(query: GalleryQuery) -> tuple[str, list[Any]]:
    clause, args = where(query)
    if query.before is not None:
        at, job_id = query.before
        clause += " AND (created_at < ? OR (created_at = ? AND id < ?))"
        args += [at, at, job_id]
    return f"WHERE {clause} ORDER BY created_at DESC, id DESC LIMIT ?", [*args, max(1, min(query.limit, 500))]


def facets_sql(query: GalleryQuery) -> dict[str, tuple[str, list[Any]]]:
    """Distinct users (with their latest display name), channels and pipelines in the query's scope
    (every job of the tenant counts, deleted ones and scenes too: these are the filters' choices)."""
    clause, args = "1 = 1", []
    if query.scoped:
        clause = "platform = ? AND " + ("workspace_id IS NULL" if query.workspace_id is None else "workspace_id = ?")
        args = [query.platform] + ([] if query.workspace_id is None else [query.workspace_id])
    name = (
        "(SELECT json_extract(n.origin_json, '$.user_name') FROM jobs n WHERE n.platform = u.platform "
        "AND n.user_id = u.user_id ORDER BY n.created_at DESC LIMIT 1)"
    )
    return {
        "users": (
            f"SELECT u.user_id, {name} FROM (SELECT DISTINCT platform, user_id FROM jobs WHERE {clause}) u "
            "ORDER BY u.user_id LIMIT 500",
            args,
        ),
        "channels": (
            f"SELECT DISTINCT channel_id FROM jobs WHERE {clause} AND channel_id IS NOT NULL ORDER BY channel_id LIMIT 500",
            args,
        ),
        "pipelines": (f"SELECT DISTINCT pipeline FROM jobs WHERE {clause} ORDER BY pipeline LIMIT 500", args),
    }
