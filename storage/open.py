"""Open the store a URL names: SQLite (the embedded default) or PostgreSQL.

- unset or empty: SQLite at `<data_dir>/videobot.sqlite3`, as always;
- `sqlite:///relative/path.sqlite3` or `sqlite:////absolute/path.sqlite3` (SQLAlchemy's spelling);
- `postgresql://user:pass@host:port/db?...` (or `postgres://`): the PostgreSQL store, a connection
  pool over asyncpg; libpq's URL forms work, e.g. `postgresql:///videobot?host=/run/postgresql`.
"""
from __future__ import annotations

from pathlib import Path

from storage.contract import Store
from storage.errors import BadDatabaseUrl

SQLITE_FILE = "videobot.sqlite3"


__all__ = ["BadDatabaseUrl", "describe", "is_postgres", "migrate_database", "open_store", "sqlite_path"]


def sqlite_path(url: str | None, data_dir: Path) -> Path | None:
    """The SQLite file a URL names (None: not a SQLite URL)."""
    if not url or not url.strip():
        return data_dir / SQLITE_FILE
    url = url.strip()
    if not url.startswith("sqlite:"):
        return None
    rest = url.removeprefix("sqlite:")
    if rest in ("", "//", "///"):
        return data_dir / SQLITE_FILE
    if not rest.startswith("///"):
        raise BadDatabaseUrl(f"{url!r}: write sqlite:///relative/path or sqlite:////absolute/path")
    return Path(rest[3:])


def is_postgres(url: str | None) -> bool:
    return bool(url) and url.strip().split(":", 1)[0] in ("postgresql", "postgres")  # type: ignore[union-attr]


def describe(url: str | None, data_dir: Path) -> str:
    """The URL without its password, for logs and messages."""
    path = sqlite_path(url, data_dir) if not is_postgres(url) else None
    if path is not None:
        return f"sqlite:///{path}"
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url or "")
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


async def open_store(url: str | None, *, data_dir: Path, media_root: Path | None = None) -> Store:
    """Open (and migrate) the store; raises DatabaseTooNew for a schema newer than this videobot.
    With `media_root`, media paths are stored relative to it and read back absolute under it
    (storage.media_paths)."""
    if is_postgres(url):
        from storage.pg import PgJobStore  # asyncpg is imported only by those who use it

        return await PgJobStore.open(url, media_root=media_root)  # type: ignore[arg-type]
    path = sqlite_path(url, data_dir)
    if path is None:
        raise BadDatabaseUrl(f"{describe(url, data_dir)}: VIDEOBOT_DATABASE_URL must start with sqlite:/// or postgresql://")
    from storage.jobs import JobStore

    return await JobStore.open(path, media_root=media_root)


async def migrate_database(url: str | None, *, data_dir: Path) -> tuple[int, int]:
    """Bring the named database's schema up to date; returns (version before, version after)."""
    if is_postgres(url):
        import asyncpg

        from storage.pg.schema import migrate
        from storage.pg.store import split_url

        dsn, _ = split_url(url)  # type: ignore[arg-type]
        conn = await asyncpg.connect(dsn)
        try:
            return await migrate(conn, describe(url, data_dir))
        finally:
            await conn.close()
    path = sqlite_path(url, data_dir)
    if path is None:
        raise BadDatabaseUrl(f"{describe(url, data_dir)}: VIDEOBOT_DATABASE_URL must start with sqlite:/// or postgresql://")
    import sqlite3

    from storage.db import connect

    before = 0
    if path.exists():
        with sqlite3.connect(path) as raw:
            before = int(raw.execute("PRAGMA user_version").fetchone()[0])
    conn = await connect(path)
    try:
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return before, int(row[0]) if row else 0
    finally:
        await conn.close()
