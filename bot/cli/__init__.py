"""`videobot` command line. Each subcommand module exposes `register(subparsers)` and sets
`handler`, an async function (args, settings) -> exit code."""
from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys

from bot.config import load_settings
from bot.core.errors import ConfigError, user_message
from bot.observability.logs import configure as configure_logging
from providers.errors import VideobotError
from storage.errors import StoreError

COMMAND_MODULES = [
    "bot.cli.generate",
    "bot.cli.jobs",
    "bot.cli.run",
    "bot.cli.image", "bot.cli.remote",  # OpenAI integration: image jobs, remote video admin
    "bot.cli.stats", "bot.cli.usage",  # costs and outcomes: per-pipeline stats, daily spending
    "bot.cli.story",  # multi-scene videos
    "bot.cli.takes",  # sets of takes: use one, more like one
    "bot.cli.status",  # processes serving the database, the queue
    "bot.cli.web",  # the web gallery
    "bot.cli.db",  # the job database: migrate, copy SQLite -> PostgreSQL
    "bot.cli.doctor",  # is this configuration able to run
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videobot", description="Slash command in, AI video out.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "reads_settings", False):  # `videobot doctor` reports a bad setting itself
            return int(asyncio.run(args.handler(args, None)))
        settings = load_settings()
        configure_logging(settings.core.log_format)
        return int(asyncio.run(args.handler(args, settings)))
    except ConfigError as exc:
        print(f"videobot: {exc.message}", file=sys.stderr)
        return 78  # EX_CONFIG
    except VideobotError as exc:
        print(f"videobot: {user_message(exc)}", file=sys.stderr)
        return 1
    except StoreError as exc:  # the store's own errors (a database too new, a bad URL, ...)
        print(f"videobot: {exc.message or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
