"""`videobot remote list | show | delete`: what the Videos API server holds, for operators.

Talks to the provider of the `sora` pipeline directly (the same key and base URL), so it
shows jobs the bot lost track of, and deletes them (which also stops one still running).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone

from openai.types import Video

from bot.config import Settings
from bot.core.errors import ConfigError
from bot.pipelines import build_registry
from providers.openai_videos import OpenAIVideoProvider

PIPELINE = "sora"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("remote", help="videos held by the OpenAI Videos API (or gateway)")
    actions = p.add_subparsers(dest="remote_action", required=True, metavar="ACTION")
    q = actions.add_parser("list", help="recent remote videos, newest first")
    q.add_argument("--limit", type=int, default=20)
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=list_remote)
    q = actions.add_parser("show", help="one remote video")
    q.add_argument("video_id")
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=show_remote)
    q = actions.add_parser("delete", help="delete a remote video (stops it if still running)")
    q.add_argument("video_id")
    q.set_defaults(handler=delete_remote)


async def list_remote(args: argparse.Namespace, settings: Settings) -> int:
    async with _provider(settings) as provider:
        videos = await provider.list_remote(limit=max(1, args.limit))
    if args.json:
        print(json.dumps([v.model_dump(mode="json") for v in videos], indent=2))
    elif not videos:
        print("no remote videos")
    for video in [] if args.json else videos:
        print(_row(video))
    return 0


async def show_remote(args: argparse.Namespace, settings: Settings) -> int:
    async with _provider(settings) as provider:
        video = await provider.show_remote(args.video_id)
    if args.json:
        print(json.dumps(video.model_dump(mode="json"), indent=2))
        return 0
    print(_row(video))
    print(f"  prompt:  {video.prompt or ''}")
    print(f"  created: {_when(video.created_at)}  completed: {_when(video.completed_at)}  expires: {_when(video.expires_at)}")
    if video.remixed_from_video_id:
        print(f"  remixed from: {video.remixed_from_video_id}")
    if video.error is not None:
        print(f"  error: [{video.error.code}] {video.error.message}")
    return 0


async def delete_remote(args: argparse.Namespace, settings: Settings) -> int:
    async with _provider(settings) as provider:
        deleted = await provider.delete_remote(args.video_id)
    print(f"{args.video_id}: {'deleted' if deleted else 'not deleted'}")
    return 0 if deleted else 1


@asynccontextmanager
async def _provider(settings: Settings) -> AsyncIterator[OpenAIVideoProvider]:
    """The `sora` pipeline's provider; refuses with the usual 'not configured' when keys are missing."""
    registry = build_registry(settings)
    try:
        pipeline = registry.get(PIPELINE)
        if not pipeline.configured:
            # The operator is the admin here: name the missing setting.
            raise ConfigError(f"`videobot remote` uses the '{PIPELINE}' pipeline: {pipeline.not_configured_reason}.")
        assert isinstance(pipeline.video, OpenAIVideoProvider)
        yield pipeline.video
    finally:
        await registry.aclose()


def _row(video: Video) -> str:
    progress = f"{video.progress}%" if video.status in ("queued", "in_progress") else ""
    return f"{video.id}  {video.status:<11} {progress:>4}  {video.model}  {video.seconds}s {video.size}  {_when(video.created_at)}"


def _when(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"
