"""`videobot generate | remix | extend`: start a job and follow it to the end."""
from __future__ import annotations

import argparse
from pathlib import Path

from bot.cli.common import cli_app, follow, origin_with_out
from bot.config import Settings
from bot.core.models import GenerateRequest
from bot.core.takes import reroll as reroll_any
from providers.input_images import readable_file


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("generate", help="make a video from a prompt")
    p.add_argument("prompt")
    p.add_argument("--pipeline", help="pipeline name (see `videobot pipelines`)")
    p.add_argument("--model", help="provider model id")
    p.add_argument("--seconds", type=int)
    p.add_argument("--size", help="WIDTHxHEIGHT, e.g. 1280x720")
    p.add_argument("--image", type=Path, help="animate this image")
    p.add_argument("--seed", type=int)
    p.add_argument("--audio", action="store_true", help="ask for a soundtrack where the pipeline can make one")
    p.add_argument("--takes", type=int, help="make N versions at once (1-4); --out is then a directory")
    p.add_argument("--out", help="also copy the MP4 here (with --takes: a directory for take-1.mp4 … and contact-sheet.png)")
    p.add_argument("--detach", action="store_true", help="only queue the job and print its id; `videobot run` makes it")
    p.set_defaults(handler=generate)

    p = sub.add_parser("remix", help="the same video again with a new prompt")
    p.add_argument("job_id")
    p.add_argument("prompt")
    p.add_argument("--out")
    p.set_defaults(handler=remix)

    p = sub.add_parser("extend", help="continue a video with new seconds")
    p.add_argument("job_id")
    p.add_argument("prompt", nargs="?")
    p.add_argument("--seconds", type=int)
    p.add_argument("--out")
    p.set_defaults(handler=extend)

    p = sub.add_parser("animate", help="a video from a finished image (its prompt, or a new one)")
    p.add_argument("job_id")
    p.add_argument("prompt", nargs="?")
    p.add_argument("--seconds", type=int)
    p.add_argument("--out")
    p.set_defaults(handler=animate)

    p = sub.add_parser("reroll", help="same prompt, new seed (a set of takes: every take again)")
    p.add_argument("job_id")
    p.add_argument("--out")
    p.set_defaults(handler=reroll)


async def generate(args: argparse.Namespace, settings: Settings) -> int:
    request = GenerateRequest(
        prompt=args.prompt, pipeline=args.pipeline, model=args.model, seconds=args.seconds,
        size=args.size, image_path=readable_file(args.image) if args.image else None, seed=args.seed, audio=args.audio, takes=args.takes,
    )  # fmt: skip
    async with cli_app(settings, run_jobs=not args.detach) as app:
        job = await app.service.submit(request, origin_with_out(args.out))
        if args.detach:
            print(job.id)
            return 0
        return await follow(app, job)


async def remix(args: argparse.Namespace, settings: Settings) -> int:
    async with cli_app(settings) as app:
        return await follow(app, await app.service.remix(args.job_id, args.prompt, origin_with_out(args.out)))


async def extend(args: argparse.Namespace, settings: Settings) -> int:
    async with cli_app(settings) as app:
        job = await app.service.extend(args.job_id, origin_with_out(args.out), seconds=args.seconds, prompt=args.prompt)
        return await follow(app, job)


async def reroll(args: argparse.Namespace, settings: Settings) -> int:
    async with cli_app(settings) as app:
        return await follow(app, await reroll_any(app.service, args.job_id, origin_with_out(args.out)))


async def animate(args: argparse.Namespace, settings: Settings) -> int:
    async with cli_app(settings) as app:
        job = await app.service.animate(args.job_id, origin_with_out(args.out), prompt=args.prompt, seconds=args.seconds)
        return await follow(app, job)
