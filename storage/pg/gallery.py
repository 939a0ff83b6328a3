"""The web gallery's read on PostgreSQL: storage.gallery's contract (scope, filters, search,
what is left out, keyset pages, facets) in PostgreSQL's SQL.

Search: the words of the text (storage.gallery.search_words), each lower-cased and with its
Latin diacritics folded exactly as the generated `jobs.search` column folds the prompt
(pg_migrations/0002_gallery.sql), then a prefix query per word under the 'english'
configuration (stemmed; 'kit' finds "kites"), all required. Ids compare bytewise (COLLATE "C"),
as SQLite compares them, whatever the database's collation.
"""
from __future__ import annotations

import re
from importlib import resources
from typing import Any

from storage.gallery import GalleryQuery, search_words

_TRANSLATE = re.compile(r"translate\(lower\(prompt\),\s*'([^']*)',\s*'([^']*)'\)", re.S)


def _fold_table() -> dict[int, str]:
    sql = (resources.files("storage") / "pg_migrations" / "0002_gallery.sql").read_text(encoding="utf-8")
    m = _TRANSLATE.search(sql)
    assert m is not None and len(m.group(1)) == len(m.group(2)), "0002_gallery.sql: the fold table is malformed"
    return str.maketrans(m.group(1), m.group(2))


FOLD = _fold_table()


def fold(word: str) -> str:
    return word.lower().translate(FOLD)


def tsquery_terms(text: str | None) -> list[str]:
    """One `to_tsquery` argument per word: a quoted lexeme with a prefix mark (no operator gets through)."""
    return [f"'{fold(w)}':*" for w in search_words(text)]


class _Args:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _scope(query: GalleryQuery, add: _Args) -> list[str]:
    if not query.scoped:
        return []
    clauses = [f"platform = {add(query.platform)}"]
    clauses.append("workspace_id IS NULL" if query.workspace_id is None else f"workspace_id = {add(query.workspace_id)}")
    return clauses


def _where(query: GalleryQuery, add: _Args) -> str:
    clauses = ["deleted_at IS NULL", "(state_json ->> 'story_scene') IS NULL", "(state_json ->> 'take') IS NULL", *_scope(query, add)]
    for column in ("user_id", "channel_id", "pipeline", "status", "kind"):
        value = getattr(query, column)
        if value is not None:
            clauses.append(f"{column} = {add(value)}")
    if query.since is not None:
        clauses.append(f"created_at >= {add(query.since)}")
    if query.until is not None:
        clauses.append(f"created_at < {add(query.until)}")
    terms = tsquery_terms(query.search)
    if terms:
        clauses.append("search @@ (" + " && ".join(f"to_tsquery('english', {add(t)})" for t in terms) + ")")
    return " AND ".join(clauses)


def page_sql(query: GalleryQuery) -> tuple[str, list[Any]]:
    add = _Args()
    clause = _where(query, add)
    if query.before is not None:
        at, job_id = query.before
        a, i = add(at), add(job_id)
        clause += f' AND (created_at < {a} OR (created_at = {a} AND id COLLATE "C" < {i}))'
    limit = add(max(1, min(query.limit, 500)))
    return f'WHERE {clause} ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT {limit}', add.values


def facets_sql(query: GalleryQuery) -> dict[str, tuple[str, list[Any]]]:
    add = _Args()
    clause = " AND ".join(_scope(query, add)) or "TRUE"
    name = (
        "(SELECT n.origin_json ->> 'user_name' FROM jobs n WHERE n.platform = u.platform AND n.user_id = u.user_id "
        "ORDER BY n.created_at DESC LIMIT 1)"
    )
    args = add.values
    return {
        "users": (
            f"SELECT u.user_id, {name} FROM (SELECT DISTINCT platform, user_id FROM jobs WHERE {clause}) u "
            'ORDER BY u.user_id COLLATE "C" LIMIT 500',
            args,
        ),
        "channels": (
            f"SELECT DISTINCT channel_id COLLATE \"C\" FROM jobs WHERE {clause} AND channel_id IS NOT NULL ORDER BY 1 LIMIT 500",
            args,
        ),
        "pipelines": (f'SELECT DISTINCT pipeline COLLATE "C" FROM jobs WHERE {clause} ORDER BY 1 LIMIT 500', args),
    }
