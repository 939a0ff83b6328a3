"""Several workers on one host behind one scrape (PROMETHEUS_MULTIPROC_DIR): each one's /metrics
shows what all of them counted; and /metrics, /readyz on the gallery's port when it runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.chaos.process import free_port
from tests.observability.support import OpsWorld, Scrape, scrape, wait_until


async def test_two_workers_share_their_counts(tmp_path: Path) -> None:
    shared = tmp_path / "prom-multiproc"
    shared.mkdir()
    async with OpsWorld(tmp_path) as world:
        a = await world.bot(role="worker", name="worker-a", PROMETHEUS_MULTIPROC_DIR=str(shared))
        b = await world.bot(role="worker", name="worker-b", PROMETHEUS_MULTIPROC_DIR=str(shared))
        env = world.env(PROMETHEUS_MULTIPROC_DIR=str(shared))
        for n in range(2):
            # Stored queued by the CLI; whichever worker claims it runs it.
            done = subprocess.run(
                [sys.executable, "-m", "bot", "generate", f"a quiet meadow number {n}", "--pipeline", "local", "--seconds", "1", "--detach"],
                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        await wait_until(lambda: [j["status"] for j in a.jobs()] == ["completed", "completed"], what="both jobs completed")

        async def both_counted(port: int) -> Scrape | None:
            s = await scrape(port)
            return s if s.value("videobot_jobs_finished_total", outcome="completed") == 2 else None

        # Either worker's scrape holds both completions, whichever ran them.
        for bot in (a, b):
            s = await wait_until(lambda: both_counted(bot.metrics_port), what="both jobs in one scrape")
            pids = {ls.get("pid") for n, ls, _ in s.samples if n == "videobot_process_info"}
            assert pids == {str(a.proc.pid), str(b.proc.pid)}
            assert s.value("videobot_jobs_in_state", state="queued") == 0


async def test_metrics_and_readiness_on_the_gallery_port(tmp_path: Path) -> None:
    web_port = free_port()
    async with OpsWorld(tmp_path) as world:
        bot = await world.bot(role="all", VIDEOBOT_WEB_PORT=str(web_port))
        s = await scrape(web_port)
        assert s.value("videobot_process_info", role="all") == 1
        import httpx

        async with httpx.AsyncClient() as client:
            ready = await client.get(f"http://127.0.0.1:{web_port}/readyz")
            health = await client.get(f"http://127.0.0.1:{web_port}/healthz")
        assert ready.status_code == 200 and set(ready.json()["checks"]) == {"database", "heartbeat", "chat"}
        assert health.status_code == 200
        assert (await bot.get("/metrics")).status_code == 200  # the metrics port serves too
