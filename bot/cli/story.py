"""`videobot story SCRIPT`: a multi-scene video, planned, made scene by scene and joined."""
from __future__ import annotations

import argparse
from pathlib import Path

from bot.cli.common import cli_app, follow, origin_with_out
from bot.config import Settings
from bot.core.models import Job
from bot.core.stories import StoryRequest, submit_story
from providers.input_images import readable_file


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "story", help="a multi-scene video: scenes separated by new lines or ' | ', or one premise",
        description="SCRIPT is a list of scenes (one per line, or separated by ' | ') or one premise that is "
        "planned into --scenes scenes (a text model with OPENAI_API_KEY, else offline).",
    )
    p.add_argument("script")
    p.add_argument("--scenes", type=int, help="scenes to plan a premise into (default 4)")
    p.add_argument("--seconds", type=int, help="seconds per scene")
    p.add_argument("--pipeline", help="pipeline name (see `videobot pipelines`)")
    p.add_argument("--model", help="provider model id")
    p.add_argument("--size", help="WIDTHxHEIGHT, e.g. 1280x720")
    p.add_argument("--image", type=Path, help="scene 1 starts from this image")
    p.add_argument("--seed", type=int)
    p.add_argument("--transition", choices=("cut", "fade"), default="cut")
    p.add_argument("--out", help="also copy the joined MP4 here")
    p.add_argument("--detach", action="store_true", help="only queue the story and print its id; `videobot run` makes it")
    p.set_defaults(handler=story)


def print_plan(job: Job) -> None:
    plan = job.state.get("plan", {})
    if plan.get("look"):
        print(f"look: {plan['look']}")
    for k, scene in enumerate(plan.get("scenes", []), 1):
        print(f"scene {k}: {scene}")
    if job.cost_estimate is not None:
        print(f"estimate: ${job.cost_estimate:.2f}")


async def story(args: argparse.Namespace, settings: Settings) -> int:
    request = StoryRequest(
        script=args.script, scenes=args.scenes, seconds=args.seconds, pipeline=args.pipeline, model=args.model,
        size=args.size, image_path=readable_file(args.image) if args.image else None, seed=args.seed, transition=args.transition,
    )  # fmt: skip
    async with cli_app(settings, run_jobs=not args.detach) as app:
        job = await submit_story(app.service, request, origin_with_out(args.out))
        if args.detach:
            print(job.id)
            return 0
        print_plan(job)
        return await follow(app, job)
