"""`videobot use | more`: what the chat's Use N and More like N buttons do, for a set of takes."""
from __future__ import annotations

import argparse
import asyncio
import shutil
from pathlib import Path

from bot.cli.common import CLI_ORIGIN, cli_app, follow, origin_with_out
from bot.config import Settings
from bot.core.takes import more_like, use_take


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("use", help="take N of a set on its own, as a normal result (nothing is made again)")
    p.add_argument("job_id", help="the set's job id")
    p.add_argument("take", type=int, help="the take's number, 1-4")
    p.add_argument("--out", help="also copy the take's file here")
    p.set_defaults(handler=use)

    p = sub.add_parser("more", help="new takes starting from take N of a set (its first frame, or its seed)")
    p.add_argument("job_id", help="the set's job id")
    p.add_argument("take", type=int, help="the take's number, 1-4")
    p.add_argument("--out", help="a directory for take-1.mp4 … and contact-sheet.png")
    p.set_defaults(handler=more)


async def use(args: argparse.Namespace, settings: Settings) -> int:
    async with cli_app(settings) as app:
        take = await use_take(app.service, args.job_id, args.take, CLI_ORIGIN)
        code = await follow(app, take)
    if code == 0 and args.out and take.output_path:
        dest = Path(args.out).resolve()
        dest.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.copyfile, take.output_path, dest)
        print(f"copied to: {dest}")
    return code


async def more(args: argparse.Namespace, settings: Settings) -> int:
    async with cli_app(settings) as app:
        return await follow(app, await more_like(app.service, args.job_id, args.take, origin_with_out(args.out)))
