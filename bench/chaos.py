"""Chaos benchmark: at least 20 SIGKILLs per pipeline, across every job state, and what they cost.

For each pipeline (local, sora, runway, gpt-image+runway, kling) a real `videobot run` serves
Slack in HTTP mode against the emulators; /video commands arrive in waves and the process
is killed with SIGKILL whenever the database shows a job in the next target state (the
targets run through all five states in a seeded random order), then started again, until
every job has ended. Reported per pipeline: kills (and the states they landed in), jobs,
duplicates (a second create, file or status message), losses (a job that did not end
completed with its file posted), the documented "not sent again" endings, image steps
paid again because their answer died with the process, and the time from each restart
to the first poll of a resumed job (for `local`, to its first database write).

Run: `make chaos` or `.venv/bin/python -m bench.chaos [--kills 20] [--seed 1] [--pipelines sora,runway]`.
Prints tables; not a test (tests/system/test_crash_chaos.py is the short version that asserts).
Exits 1 when any promise was broken (a duplicate, a loss, a status card not showing the ending...)
or when fewer kills than planned landed in a state (a job must be in it when the process dies).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from bench.core import pct, table
from tests.chaos import PIPELINES, ChaosConfig, ChaosResult, World, run_chaos


async def one(pipeline: str, kills: int, seed: int, root: Path) -> ChaosResult:
    config = ChaosConfig(
        pipeline=pipeline, kills=kills, seed=seed, stop_on_stall=False, finish_timeout=180.0, resume_timeout=30.0,
    )  # fmt: skip
    async with World(root / "emulators") as world:
        return await run_chaos(world, root, config)


def rows_of(result: ChaosResult) -> dict[str, float | int]:
    resumed = result.resume_times()
    rows: dict[str, float | int] = {
        "kills": len(result.kills),
        "jobs": len(result.verdicts),
        "duplicates": result.duplicates,
        "losses": result.losses,
        "ambiguous (documented)": result.ambiguous,
        "image steps re-paid": result.repaid,
        "restarts that stalled": sum(1 for k in result.kills if k.stalled),
        "resumed jobs measured": len(resumed),
        "restart->first poll p50 s": pct(resumed, 0.5) if resumed else float("nan"),
        "restart->first poll max s": max(resumed) if resumed else float("nan"),
        "restart->serving p50 s": pct([k.ready_after for k in result.kills], 0.5) if result.kills else float("nan"),
        "wall time s": result.elapsed,
    }
    for state, n in sorted(result.coverage().items()):
        rows[f"kills in {state}"] = n
    landed = result.landed()
    for state, asked in sorted(result.planned().items()):
        rows[f"landed in {state} / planned"] = f"{landed.get(state, 0)} / {asked}"  # type: ignore[assignment]
    rows["kills that missed (tried again)"] = sum(not k.hit for k in result.kills)
    return rows


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs per pipeline (default 20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help="comma-separated (default: all of them)")
    parser.add_argument("--verbose", action="store_true", help="print every failed promise, not only the counts")
    args = parser.parse_args(argv)
    results: list[ChaosResult] = []
    started = time.monotonic()
    for name in args.pipelines.split(","):
        with tempfile.TemporaryDirectory(prefix=f"videobot-chaos-{name.replace('+', '-')}-") as tmp:
            result = await one(name, args.kills, args.seed, Path(tmp))
        results.append(result)
        table(f"chaos: {name}, {args.kills} SIGKILLs (seed {args.seed})", rows_of(result))
        failures = result.failures()
        if failures:
            print(f"  {len(failures)} broken promises" + ("" if args.verbose else " (--verbose lists them)"))
            for line in failures if args.verbose else failures[:5]:
                print("  - " + line)
    print(f"\n{'pipeline':<18} {'kills':>5} {'jobs':>5} {'dups':>5} {'losses':>6} {'ambig':>5} {'first poll p50/max s':>21}")
    for r in results:
        resumed = r.resume_times()
        times = f"{pct(resumed, 0.5):.2f} / {max(resumed):.2f}" if resumed else "-"
        print(f"{r.config.pipeline:<18} {len(r.kills):>5} {len(r.verdicts):>5} {r.duplicates:>5} {r.losses:>6} {r.ambiguous:>5} {times:>21}")
    print(f"total wall time {time.monotonic() - started:.0f} s")
    return 1 if any(r.failures() for r in results) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
