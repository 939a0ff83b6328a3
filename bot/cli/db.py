"""`videobot db migrate` and `videobot db copy`: the database behind the bot.

- `db migrate [--url URL]`: bring the schema up to date (VIDEOBOT_DATABASE_URL by default;
  starting the bot does the same). A database written by a newer videobot is refused untouched.
- `db copy --from URL --to URL [--append]`: move a history (jobs, events, settings, pending
  confirmations), e.g. from SQLite to PostgreSQL when a bot outgrows one machine. Safe to run
  again; refuses a target that holds other jobs unless --append. Stop the bot first.
"""
from __future__ import annotations

import argparse
import sys

from bot.config import Settings
from storage.copy import TargetNotEmpty, copy_database
from storage.open import BadDatabaseUrl, describe, migrate_database


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("db", help="the job database: migrate its schema, copy a history to another database")
    db = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    m = db.add_parser("migrate", help="bring the database's schema up to date")
    m.add_argument("--url", help="database URL (default: VIDEOBOT_DATABASE_URL, else SQLite in the data dir)")
    m.set_defaults(handler=migrate)
    c = db.add_parser("copy", help="copy jobs, events, settings and pending confirmations to another database")
    c.add_argument("--from", dest="source", required=True, help="source URL, e.g. sqlite:///data/videobot.sqlite3")
    c.add_argument("--to", dest="target", required=True, help="target URL, e.g. postgresql://user@host/videobot")
    c.add_argument("--append", action="store_true", help="add to a target that already holds other jobs")
    c.set_defaults(handler=copy)


async def migrate(args: argparse.Namespace, settings: Settings) -> int:
    url = args.url if args.url is not None else settings.core.database_url
    data = settings.core.data_dir.resolve()
    try:
        before, after = await migrate_database(url, data_dir=data)
    except BadDatabaseUrl as exc:
        print(f"videobot: {exc}", file=sys.stderr)
        return 2
    where = describe(url, data)
    print(f"{where}: schema {after}" + (" (up to date)" if before == after else f" (was {before})"))
    return 0


async def copy(args: argparse.Namespace, settings: Settings) -> int:
    data = settings.core.data_dir.resolve()
    try:
        report = await copy_database(args.source, args.target, data_dir=data, append=args.append)
    except (TargetNotEmpty, BadDatabaseUrl, ValueError) as exc:
        print(f"videobot: {exc}", file=sys.stderr)
        return 1
    print(f"{describe(args.source, data)} -> {describe(args.target, data)}: {report.text()}")
    return 0
