"""Story benchmark: joining scenes, and what a story costs in time over its scenes.

1. Join: six 10 s 1280x720 clips (24 fps, rendered offline) joined with `cut` (packets
   copied: same format), `cut` re-encoded (a different frame rate forces it), and `fade`
   (0.5 s crossfades, always re-encoded).
2. Overhead: a 6-scene story of 10 s scenes on the `local` pipeline through the real core;
   the story's wall time against the sum of its scene jobs' own run times (the provider
   work), so the difference is the driver, the start frames and the join.

Run: `.venv/bin/python -m bench.story`. Prints a table; not a test.
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path



def join_times(work: Path) -> list[tuple[str, str]]:
    from providers.local_render import render_clip
    from providers.media import concat_many, probe_video

    parts = []
    for i in range(6):
        part = work / f"scene{i}.mp4"
        render_clip(part, prompt=f"scene {i}: a harbour at dawn", seconds=10, width=1280, height=720, fps=24, seed=i)
        parts.append(part)
    rows = []
    for label, kw in (("cut (copy)", {"fps": 24, "transition": "cut"}), ("cut (re-encode)", {"fps": 25, "transition": "cut"}),
                      ("fade", {"fps": 24, "transition": "fade"})):  # fmt: skip
        dest = work / f"{label.split()[0]}-{kw['fps']}.mp4"
        start = time.perf_counter()
        concat_many(parts, dest, size=(1280, 720), **kw)  # type: ignore[arg-type]
        took = time.perf_counter() - start
        rows.append((f"join 6 × 10 s 1280x720, {label}", f"{took:.2f} s (result {probe_video(dest).duration:.1f} s)"))
    return rows


async def story_overhead(work: Path) -> list[tuple[str, str]]:
    os.environ["VIDEOBOT_DATA_DIR"] = str(work / "data")
    from bot.app import open_app
    from bot.config import load_settings
    from bot.core.models import JobStatus, Origin
    from bot.core.stories import StoryRequest, submit_story
    from bot.core.story_plan import StoryPlanner

    app = await open_app(load_settings())

    async def nowhere(job: object) -> None:
        return None

    app.runner.deliverers["cli"] = nowhere
    await app.runner.start(resume=False)
    try:
        script = " | ".join(f"scene {k}: a harbour at dawn, boats leave" for k in range(1, 7))
        start = time.perf_counter()
        story = await submit_story(app.service, StoryRequest(script=script, pipeline="local", seconds=10, size="1280x720"),
                                   Origin(platform="cli", user_id="bench"), planner=StoryPlanner())  # fmt: skip
        done = await app.runner.wait(story.id)
        wall = time.perf_counter() - start
        assert done.status is JobStatus.COMPLETED, done.error_message
        scenes = [c for c in await app.store.children(story.id) if c.state.get("story_scene")]
        work_s = sum((c.finished_at or 0) - (c.started_at or 0) for c in scenes)
    finally:
        await app.close()
    return [
        ("6-scene story (6 × 10 s, local), wall", f"{wall:.1f} s"),
        ("sum of its scenes' run times", f"{work_s:.1f} s"),
        ("story overhead (driver, start frames, join)", f"{wall - work_s:.1f} s ({100 * (wall - work_s) / work_s:.0f} %)"),
    ]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="videobot-bench-story-") as tmp:
        work = Path(tmp)
        rows = join_times(work)
        rows += asyncio.run(story_overhead(work))
    print("\nstory benchmark")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
