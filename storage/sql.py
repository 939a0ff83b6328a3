"""What the two SQL dialects spell differently, and the write scripts both backends run.

Queries are written once, with `?` placeholders; `Dialect.render` numbers them (`$1`, ...) for
PostgreSQL. The few spellings that differ are methods here: a list match (`IN (?, ?)` against
`= ANY(?)`), a NULL-safe equality, JSON access, the insertion order, bytewise id order, search,
row locks, and advisory locks (SQLite needs none: a write transaction holds the whole database).

A write is a *script*: a generator that yields statements (`Stmt`) and is sent each one's rows
back, and returns its result. Each backend drives scripts in its own way (SQLite on its writer
thread, in a group-committed transaction; PostgreSQL on a pooled connection), so the logic of
a write (the fence, the refusal's reason, the event row, the spend gate) is written once.
A script raises only before its first write, so an exception never leaves half a write behind.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from storage.search import fts_match, tsquery_terms

T = TypeVar("T")
Row = Mapping[str, Any]


@dataclass(frozen=True)
class Stmt:
    sql: str
    args: Sequence[Any] = ()


#: A write: yields statements, is sent their rows, returns its result.
Script = Generator[Stmt, list[Row], T]


@dataclass(frozen=True)
class Write:
    """A script to run in one transaction, with the advisory locks it needs taken first
    (PostgreSQL; names, taken in sorted order so two writers cannot deadlock)."""

    make: Callable[[], Script[Any]]
    locks: frozenset[str] = field(default_factory=frozenset)
    #: Each writing statement stands on its own (the others only read): no transaction needed.
    solo: bool = False


_MARK = re.compile(r"'[^']*'|\?")


class Dialect:
    name = "sqlite"
    #: The insertion order (ties in created_at).
    seq = "rowid"
    #: Appended to a SELECT whose rows the transaction goes on to change.
    for_update = ""

    def render(self, sql: str) -> str:
        return sql

    def any(self, column: str, values: Collection[Any], *, negate: bool = False) -> tuple[str, list[Any]]:
        """`column` is (not) one of `values`."""
        items = list(values)
        if not items:
            return ("1 = 1" if negate else "1 = 0"), []
        return f"{column} {'NOT IN' if negate else 'IN'} ({', '.join('?' for _ in items)})", items

    def same(self, column: str) -> str:
        """NULL-safe equality with one argument."""
        return f"{column} IS ?"

    def json_text(self, column: str, *path: str) -> str:
        return f"json_extract({column}, '$.{'.'.join(path)}')"

    def json_number(self, column: str, *path: str) -> str:
        return self.json_text(column, *path)

    def ordered(self, column: str) -> str:
        """A text column compared bytewise (SQLite's default)."""
        return column

    def search(self, text: str | None) -> tuple[str, list[Any]] | None:
        """The gallery's prompt search (storage.gallery), or None when `text` has no words."""
        match = fts_match(text)
        if match is None:
            return None
        return "id IN (SELECT job_id FROM jobs_fts WHERE jobs_fts MATCH ?)", [match]

    def lock(self, names: Collection[str]) -> Stmt | None:
        return None

    def with_event(self, update: Stmt, at: float, detail: str | None, runner: str | None) -> Stmt | None:
        """An `UPDATE jobs ... RETURNING *` and the event row it implies as one statement, or None
        where the dialect cannot (SQLite: the script writes the event next)."""
        return None


class PostgresDialect(Dialect):
    name = "postgresql"
    seq = "seq"
    for_update = " FOR UPDATE"

    def with_event(self, update: Stmt, at: float, detail: str | None, runner: str | None) -> Stmt | None:
        # The event reads the status the update left.
        return Stmt(
            f"WITH u AS ({update.sql}), e AS (INSERT INTO job_events (job_id, at, status, progress, detail, runner) "
            "SELECT id, ?, status, progress, ?, ? FROM u) SELECT * FROM u",
            [*update.args, at, detail, runner],
        )

    def render(self, sql: str) -> str:
        count = 0

        def number(m: re.Match[str]) -> str:
            nonlocal count
            if m.group(0) != "?":
                return m.group(0)
            count += 1
            return f"${count}"

        return _MARK.sub(number, sql)

    def any(self, column: str, values: Collection[Any], *, negate: bool = False) -> tuple[str, list[Any]]:
        return (f"{column} <> ALL(?::text[])" if negate else f"{column} = ANY(?::text[])"), [list(values)]

    def same(self, column: str) -> str:
        return f"{column} IS NOT DISTINCT FROM ?"

    def json_text(self, column: str, *path: str) -> str:
        return f"{column} #>> '{{{','.join(path)}}}'"

    def json_number(self, column: str, *path: str) -> str:
        return f"({self.json_text(column, *path)})::double precision"

    def ordered(self, column: str) -> str:
        return f'{column} COLLATE "C"'

    def search(self, text: str | None) -> tuple[str, list[Any]] | None:
        terms = tsquery_terms(text)
        if not terms:
            return None
        return "search @@ (" + " && ".join("to_tsquery('english', ?)" for _ in terms) + ")", terms

    def lock(self, names: Collection[str]) -> Stmt | None:
        if not names:
            return None
        from storage.pg.locks import SPEND_NAMESPACE

        # One statement for every lock, in sorted order (unnest keeps the array's order).
        return Stmt("SELECT pg_advisory_xact_lock(?, hashtext(name)) FROM unnest(?::text[]) AS name", (SPEND_NAMESPACE, sorted(names)))


SQLITE = Dialect()
POSTGRES = PostgresDialect()


class Where:
    """AND-ed conditions and their arguments, built up in order."""

    def __init__(self, *conditions: str) -> None:
        self.parts: list[str] = list(conditions)
        self.args: list[Any] = []

    def add(self, condition: str, *args: Any) -> Where:
        self.parts.append(condition)
        self.args.extend(args)
        return self

    def extend(self, fragment: tuple[str, list[Any]]) -> Where:
        return self.add(fragment[0], *fragment[1])

    @property
    def sql(self) -> str:
        return " AND ".join(self.parts) or "1 = 1"
