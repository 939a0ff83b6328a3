"""`videobot jobs | show | cancel | pipelines`: read and manage the job store."""
from __future__ import annotations

import argparse
import json
import sys

from bot.cli.common import CLI_ORIGIN, cli_app, follow
from bot.config import Settings
from bot.core.dispatch import describe_job
from bot.app import App
from bot.core.models import Actor, Job, JobKind, JobStatus
from bot.core.render import job_row
from bot.core.retention import expire_media
from bot.core.takes import take_rows
from storage.leases import Holder


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("jobs", help="list recent jobs (all users)")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--status", choices=[s.value for s in JobStatus])
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=list_jobs)

    p = sub.add_parser("show", help="one job in full, with its history")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=show)

    p = sub.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job_id")
    p.set_defaults(handler=cancel)

    p = sub.add_parser("redeliver", help="post a finished job's result again after its delivery failed")
    p.add_argument("job_id")
    p.set_defaults(handler=redeliver)

    p = sub.add_parser("gc", help="remove the media files of jobs older than VIDEOBOT_RETENTION_DAYS (rows are kept)")
    p.add_argument("--days", type=float, help="override VIDEOBOT_RETENTION_DAYS for this run")
    p.set_defaults(handler=gc)

    p = sub.add_parser("pipelines", help="the pipelines this bot offers")
    p.set_defaults(handler=pipelines)


async def list_jobs(args: argparse.Namespace, settings: Settings) -> int:
    async with cli_app(settings, run_jobs=False) as app:
        jobs = await app.store.list(statuses=[JobStatus(args.status)] if args.status else None, limit=args.limit)
    if args.json:
        print(json.dumps([j.model_dump(mode="json") for j in jobs], indent=2))
    elif not jobs:
        print("no jobs yet: try videobot generate \"a teal coupe crossing a desert at noon\"")
    else:
        for job in jobs:
            print(job_row(job))
    return 0


async def show(args: argparse.Namespace, settings: Settings) -> int:
    async with cli_app(settings, run_jobs=False) as app:
        job = await app.service.get(args.job_id)
        events = await app.store.events(job.id)
        scenes = await story_scenes(app, job)
        takes = await take_rows(app.service, job) if job.kind is JobKind.TAKES else None
    events = [with_runner(dict(e)) for e in events]
    if args.json:
        extra: dict[str, object] = {"scenes": scenes} if scenes is not None else {}
        if takes is not None:
            extra["takes"] = takes
        print(json.dumps({**job.model_dump(mode="json"), "events": events, **extra}, indent=2))
        return 0
    print(describe_job(job))
    for take in takes or []:
        print(f"  take {take['take']}: job {take['job_id']} seed {take['seed']} {take['status']}"
              + (f" {take['file']}" if take["file"] else "") + (f" ({take['error']})" if take["error"] else ""))
    for scene in scenes or []:
        print(
            f"  scene {scene['scene']}: job {scene['job_id']} {scene['status']}"
            + (f" (attempt {scene['attempt']})" if scene["attempt"] > 1 else "")
            + (" (reused from the story it was redone from)" if scene["reused"] else "")
        )
    for event in events:
        detail = f"  {event['detail']}" if event["detail"] else ""
        by = f"  [pid {event['runner_pid']} on {event['runner_host']}]" if event.get("runner_pid") is not None else ""
        print(f"  {event['at']:.3f}  {event['status']}{detail}{by}")
    return 0


def with_runner(event: dict[str, object]) -> dict[str, object]:
    """The event with the host and pid of the runner that wrote it (parsed from its lease
    owner text, `host~boot/pid/start/token`); None for writes outside a runner (a CLI cancel)."""
    holder = Holder.parse(str(event["runner"])) if event.get("runner") else None
    return {
        **event, "runner": event.get("runner"),
        "runner_host": holder.host.split("~")[0] if holder else None, "runner_pid": holder.pid if holder else None,
    }  # fmt: skip


async def story_scenes(app: App, job: Job) -> list[dict[str, object]] | None:
    """A story's scene jobs in order (every attempt), for `show`; None for other jobs. A story made
    by Redo scene / Add scene reuses the finished scenes of the story it came from: those are listed
    too, marked `reused` (their rows are the earlier story's children)."""
    if job.kind is not JobKind.STORY:
        return None
    children = [c for c in await app.store.children(job.id) if c.state.get("story_scene")]
    own = {c.id for c in children}
    for scene_id in job.state.get("scene_jobs", []):
        if scene_id not in own and (reused := await app.store.get(scene_id)) is not None and reused.state.get("story_scene"):
            children.append(reused)
    return [
        {"scene": c.state["story_scene"], "attempt": c.state.get("story_attempt", 1), "job_id": c.id, "status": c.status.value,
         "prompt": c.prompt, "output_path": c.output_path, "cost_actual": c.cost_actual, "reused": c.id not in own}
        for c in sorted(children, key=lambda c: (c.state["story_scene"], c.state.get("story_attempt", 1)))
    ]  # fmt: skip


async def cancel(args: argparse.Namespace, settings: Settings) -> int:
    async with cli_app(settings, run_jobs=False) as app:
        # The operator at the terminal may cancel anyone's job.
        job = await app.service.cancel(args.job_id, Actor(user_id=CLI_ORIGIN.user_id, is_admin=True))
    print(f"job {job.id}: {job.status.value}")
    return 0


async def redeliver(args: argparse.Namespace, settings: Settings) -> int:
    async with cli_app(settings) as app:
        job = await app.service.redeliver(args.job_id)
        if job.origin.platform == CLI_ORIGIN.platform:
            return await follow(app, job)
    print(f"job {job.id}: queued for delivery to {job.origin.platform}; the running bot posts it (videobot run).")
    return 0


async def gc(args: argparse.Namespace, settings: Settings) -> int:
    days = args.days if args.days is not None else settings.core.retention_days
    if not days or days <= 0:
        print("videobot: retention is off; set VIDEOBOT_RETENTION_DAYS or pass --days N.", file=sys.stderr)
        return 2
    async with cli_app(settings, run_jobs=False) as app:
        count = await expire_media(app.store, app.media, days)
    print(f"removed the files of {count} job{'s' if count != 1 else ''} finished more than {days:g} days ago")
    return 0


async def pipelines(args: argparse.Namespace, settings: Settings) -> int:
    async with cli_app(settings, run_jobs=False) as app:
        defaults = {app.service.default_pipeline(image=False): "video", app.service.default_pipeline(image=True): "image"}
        for name in app.registry.names():
            pipeline = app.registry.get(name)
            caps = ", ".join(sorted(c.value for c in pipeline.capabilities))
            state = "" if pipeline.configured else "  (not configured)"
            if name in defaults:
                state += f"  (default for {defaults[name]})"
            print(f"{name:<20} {caps}{state}\n{'':<20} {pipeline.description}")
    return 0
