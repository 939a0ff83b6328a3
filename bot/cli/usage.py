"""`videobot usage [--user ID]`: today's spending (UTC) per user, against the daily budgets."""
from __future__ import annotations

import argparse
import json

from bot.cli.common import cli_app
from bot.config import Settings
from bot.core.budget import Ledger


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("usage", help="today's spending per user against the daily budgets")
    p.add_argument("--user", help="only this user id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=usage)


async def usage(args: argparse.Namespace, settings: Settings) -> int:
    core = settings.core
    async with cli_app(settings, run_jobs=False) as app:
        rows = await Ledger(app.store).spent_by_user(user_id=args.user)
    if args.json:
        print(json.dumps([
            {"platform": p, "user_id": u, "workspace_id": w, "jobs": n, "spent": s} for p, u, w, n, s in rows
        ], indent=2))  # fmt: skip
        return 0
    user_budget = f"${core.daily_budget_user_usd:.2f}" if core.daily_budget_user_usd is not None else "none"
    ws_budget = f"${core.daily_budget_workspace_usd:.2f}" if core.daily_budget_workspace_usd is not None else "none"
    print(f"daily budget per user: {user_budget}; per workspace: {ws_budget} (days are UTC)")
    if not rows:
        print("no jobs today" + (f" for {args.user}" if args.user else ""))
        return 0
    print(f"{'platform':<9} {'user':<22} {'workspace':<14} {'jobs':>5} {'spent':>9} {'left':>9}")
    for platform, user, workspace, jobs, spent in rows:
        left = f"${max(core.daily_budget_user_usd - spent, 0):.2f}" if core.daily_budget_user_usd is not None else "-"
        print(f"{platform:<9} {user:<22} {workspace or '-':<14} {jobs:>5} {'$' + format(spent, '.2f'):>9} {left:>9}")
    return 0
