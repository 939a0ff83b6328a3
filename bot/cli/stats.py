"""`videobot stats`: per pipeline, how jobs went (A/B splits compare their arms here)."""
from __future__ import annotations

import argparse
import json
import time

from bot.cli.common import cli_app
from bot.config import Settings
from bot.core.budget import Ledger


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("stats", help="per pipeline: jobs, success rate, median time to deliver, cost")
    p.add_argument("--days", type=float, default=30, help="look back this many days (default 30)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=stats)


async def stats(args: argparse.Namespace, settings: Settings) -> int:
    async with cli_app(settings, run_jobs=False) as app:
        rows = await Ledger(app.store).pipeline_stats(since=time.time() - args.days * 86400)
    if args.json:
        print(json.dumps([r.model_dump() for r in rows], indent=2))
        return 0
    if not rows:
        print(f"no video jobs in the last {args.days:g} days")
        return 0
    print(f"{'pipeline':<22} {'jobs':>5} {'success':>8} {'median':>8} {'cost':>9} {'GPU time':>9}")
    for r in rows:
        rate = f"{r.success_rate:.0%}" if r.success_rate is not None else "-"
        median = f"{r.median_seconds:.1f}s" if r.median_seconds is not None else "-"
        gpu = f"{r.gpu_seconds:.0f}s" if r.gpu_seconds else "-"
        print(f"{r.pipeline:<22} {r.jobs:>5} {rate:>8} {median:>8} {'$' + format(r.cost, '.2f'):>9} {gpu:>9}")
    return 0
