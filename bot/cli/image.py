"""`videobot image`: make a still from a prompt and follow it to the end."""
from __future__ import annotations

import argparse

from bot.cli.common import cli_app, follow, origin_with_out
from bot.config import Settings
from bot.core.models import GenerateRequest, JobKind


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("image", help="make an image from a prompt")
    p.add_argument("prompt")
    p.add_argument("--size", help="WIDTHxHEIGHT, e.g. 1024x1024")
    p.add_argument("--pipeline", help="image pipeline: gpt-image, local-image (default)")
    p.add_argument("--model", help="provider model id, e.g. gpt-image-2")
    p.add_argument("--seed", type=int)
    p.add_argument("--takes", type=int, help="make N versions at once (1-4); --out is then a directory")
    p.add_argument("--out", help="also copy the PNG here (with --takes: a directory for take-1.png … and contact-sheet.png)")
    p.set_defaults(handler=image)


async def image(args: argparse.Namespace, settings: Settings) -> int:
    request = GenerateRequest(
        prompt=args.prompt, kind=JobKind.IMAGE, pipeline=args.pipeline, model=args.model, size=args.size, seed=args.seed, takes=args.takes,
    )  # fmt: skip
    async with cli_app(settings) as app:
        job = await app.service.submit(request, origin_with_out(args.out))
        return await follow(app, job)
