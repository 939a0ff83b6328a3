"""Takes benchmark: what N takes at once cost in wall time over one take, and the contact sheet.

1. Emulator: 4 takes of 4 s on `sora` against the loopback OpenAI emulator (the real openai SDK
   over HTTP) with a fixed 5 s job, through the real core (admission, runner, TakesDriver): the
   set's wall time (asked to delivered) against one take's. The provider's time dominates, so
   the takes run side by side; the target is under 1.3x.
2. Local: the same on the `local` pipeline (rendered in-process, so CPU-bound: the set is
   bounded by the machine's cores, not by the driver).
3. The contact sheet: a frame from the middle of each of the 4 takes, side by side (PyAV, Pillow),
   for the emulator's 128x72 clips and for local 640x360 clips.

Run: `.venv/bin/python -m bench.takes`. Prints a table; not a test.
"""
from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

TAKES = 4
SECONDS = 4
PROVIDER_SECONDS = 5.0
RUNS = 3


async def _app(work: Path, **env: str):  # type: ignore[no-untyped-def]
    from bot.app import open_app
    from bot.config import load_settings
    from providers.polling import PollPolicy

    os.environ.update({
        "VIDEOBOT_DATA_DIR": str(work), "VIDEOBOT_MAX_RUNNING_PER_USER": str(TAKES), "VIDEOBOT_MAX_CONCURRENT_JOBS": str(TAKES),
        "VIDEOBOT_CONFIRM_ABOVE_USD": "", "VIDEOBOT_MODERATION": "off", **env,
    })  # fmt: skip
    app = await open_app(load_settings())
    app.runner.poll_policy = PollPolicy(interval=0.1, min_interval=0.05, timeout=600, backoff_base=0.05, backoff_max=0.5)

    async def nowhere(job: object) -> None:
        return None

    app.runner.deliverers["cli"] = nowhere
    await app.runner.start(resume=False)
    return app


async def _timed(app, request) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    from bot.core.models import JobStatus, Origin

    start = time.perf_counter()
    job = await app.service.submit(request, Origin(platform="cli", user_id="bench"))
    done = await app.runner.wait(job.id)
    took = time.perf_counter() - start
    assert done.status is JobStatus.COMPLETED, done.error_message
    return took, done


async def _compare(app, request) -> tuple[float, float, object]:  # type: ignore[no-untyped-def]
    """Median wall time of one take and of a set of TAKES (RUNS each, alternating)."""
    ones, sets, last = [], [], None
    for _ in range(RUNS):
        ones.append((await _timed(app, request.model_copy(update={"takes": None})))[0])
        took, last = await _timed(app, request.model_copy(update={"takes": TAKES}))
        sets.append(took)
    return statistics.median(ones), statistics.median(sets), last


async def emulator(work: Path) -> tuple[list[tuple[str, str]], list[Path]]:
    from bot.core.models import GenerateRequest
    from tests.fakes.openai_server import OpenAIEmulator

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    (work / "emulator").mkdir(parents=True, exist_ok=True)
    server = OpenAIEmulator(work / "emulator")
    server.advance, server.seconds_to_complete, server.poll_after_ms = "time", PROVIDER_SECONDS, 100
    await server.start()
    app = await _app(work / "emu", OPENAI_API_KEY=server.api_key, OPENAI_BASE_URL=server.base_url)
    try:
        ask = GenerateRequest(prompt="a lighthouse at dusk, waves", pipeline="sora", seconds=SECONDS, size="1280x720")
        one, many, last = await _compare(app, ask)
        files = [Path(r["output_path"]) for r in last.state["take_results"]]  # type: ignore[attr-defined]
    finally:
        await app.close()
        await server.stop()
    return [
        (f"emulator (sora, fixed {PROVIDER_SECONDS:g} s job): one take", f"{one:.2f} s"),
        (f"emulator: {TAKES} takes at once", f"{many:.2f} s ({many / one:.2f}x one take; target < 1.3x)"),
    ], files


async def local(work: Path) -> tuple[list[tuple[str, str]], list[Path]]:
    from bot.core.models import GenerateRequest

    app = await _app(work / "local")
    try:
        ask = GenerateRequest(prompt="a lighthouse at dusk, waves", pipeline="local", seconds=SECONDS, size="640x360")
        one, many, last = await _compare(app, ask)
        files = [Path(r["output_path"]) for r in last.state["take_results"]]  # type: ignore[attr-defined]
    finally:
        await app.close()
    return [
        (f"local ({SECONDS} s 640x360, CPU-bound, {os.cpu_count()} cores): one take", f"{one:.2f} s"),
        (f"local: {TAKES} takes at once", f"{many:.2f} s ({many / one:.2f}x one take)"),
    ], files


def sheet_time(label: str, files: list[Path], work: Path) -> tuple[str, str]:
    from bot.core.take_set import write_contact_sheet

    times = []
    for i in range(RUNS):
        dest = work / f"sheet-{label}-{i}.png"
        start = time.perf_counter()
        write_contact_sheet([(k, k, f) for k, f in enumerate(files, 1)], dest)
        times.append(time.perf_counter() - start)
    return (f"contact sheet of {len(files)} takes ({label})", f"{statistics.median(times) * 1000:.0f} ms")


async def run(work: Path) -> list[tuple[str, str]]:
    rows, emu_files = await emulator(work)
    local_rows, local_files = await local(work)
    rows += local_rows
    rows.append(sheet_time("emulator, 128x72 4 s", emu_files, work))
    rows.append(sheet_time("local, 640x360 4 s", local_files, work))
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="videobot-bench-takes-") as tmp:
        rows = asyncio.run(run(Path(tmp)))
    width = max(len(label) for label, _ in rows)
    print(f"takes benchmark ({RUNS} runs each, medians)")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


if __name__ == "__main__":
    main()
