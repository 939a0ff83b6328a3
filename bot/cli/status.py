"""`videobot status`: the processes serving this database and the state of the queue.

Every `videobot run` process (gateway, worker or all) refreshes a heartbeat row every
VIDEOBOT_HEARTBEAT_SECONDS; one not heard from for three intervals is listed as silent
(killed, or its machine unreachable: its jobs are taken over when their leases run out).
"""
from __future__ import annotations

import argparse
import json
import time

from bot.cli.common import cli_app
from bot.config import Settings
from bot.core.heartbeat import ALIVE_INTERVALS
from storage.leases import Holder


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="running gateways and workers, queue length and the oldest queued job")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=status)


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


async def status(args: argparse.Namespace, settings: Settings) -> int:
    async with cli_app(settings, run_jobs=False) as app:
        rows = await app.store.workers()
        queue = await app.store.queue_stats()
    now = time.time()
    silent_after = ALIVE_INTERVALS * settings.core.heartbeat_seconds
    workers = []
    for row in rows:
        holder = Holder.parse(row.id)
        workers.append({
            "id": row.id, "host": row.host, "pid": row.pid, "role": row.role, "held": row.held,
            "started_at": row.started_at, "last_seen": row.last_seen, "age": round(now - row.last_seen, 3),
            "alive": now - row.last_seen <= silent_after, "boot": holder.host.split("~", 1)[-1] if holder and "~" in holder.host else None,
        })  # fmt: skip
    oldest = queue.oldest_queued_at
    summary = {
        "queued": queue.queued, "running": queue.running, "oldest_queued_at": oldest,
        "oldest_queued_age": round(now - oldest, 3) if oldest is not None else None,
    }  # fmt: skip
    if args.json:
        print(json.dumps({"workers": workers, "queue": summary}, indent=2))
        return 0
    alive = [w for w in workers if w["alive"]]
    silent = [w for w in workers if not w["alive"]]
    print(f"processes alive: {len(alive)}" + (f"  (silent for over {silent_after:g}s: {len(silent)})" if silent else ""))
    if workers:
        print(f"  {'HOST':<24} {'PID':>7}  {'ROLE':<8} {'LAST BEAT':>10} {'HELD':>5}")
        for w in alive + silent:
            mark = "" if w["alive"] else "  silent"
            print(f"  {str(w['host'])[:24]:<24} {w['pid']:>7}  {w['role']:<8} {_age(float(w['age'])) + ' ago':>10} {w['held']:>5}{mark}")
    line = f"queue: {queue.queued} queued, {queue.running} running"
    if oldest is not None:
        line += f"; oldest queued {_age(now - oldest)} ago"
    print(line)
    return 0
