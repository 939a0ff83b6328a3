"""Debian's Prometheus server scraping a real `videobot run` and a worker: what its query API
answers matches what happened (one job completed, one failed at the emulator, one cancelled)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.chaos.process import free_port
from tests.observability.support import OpsWorld, wait_until
from tests.observability.test_metrics_e2e import PROMPTS


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        reason = "Debian's prometheus server (apt-get install prometheus) is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return found


class Prometheus:
    def __init__(self, work: Path, targets: list[str]) -> None:
        self.port = free_port()
        work.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "videobot", "static_configs": [{"targets": targets}]}],
        }
        self.config = work / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = work / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [prometheus_binary(), f"--config.file={self.config}", f"--storage.tsdb.path={work / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    async def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": expr})
        body = response.json()
        assert body["status"] == "success", body
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in body["data"]["result"]}

    async def targets_up(self) -> bool:
        try:
            up = await self.query("up")
        except (httpx.HTTPError, ValueError):
            return False
        return len(up) == 2 and all(v == 1 for v in up.values())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def test_prometheus_sees_the_outcomes_and_states(tmp_path: Path) -> None:
    prometheus_binary()
    async with OpsWorld(tmp_path) as world:
        bot = await world.bot(role="all", name="all")
        worker = await world.bot(role="worker", name="worker")
        server = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{bot.metrics_port}", f"127.0.0.1:{worker.metrics_port}"])
        try:
            await wait_until(server.targets_up, timeout=60, what="Prometheus scraping both processes")
            url, slack = bot.proc.url, world.slack
            await slack.slash(url, "/video", f"{PROMPTS['done']} --seconds 2")
            await wait_until(lambda: (j := bot.job_for(PROMPTS["done"])) and j["status"] == "completed", what="the local job")
            world.openai.fail_jobs = ("moderation_blocked", "Your request was blocked by our moderation system.")
            await slack.slash(url, "/video", f"{PROMPTS['fail']} --pipeline sora --seconds 4")
            await wait_until(lambda: (j := bot.job_for(PROMPTS["fail"])) and j["status"] == "failed", what="the failing job")
            world.openai.fail_jobs = None
            world.openai.polls_to_complete = 100_000
            await slack.slash(url, "/video", f"{PROMPTS['cancel']} --pipeline sora --seconds 4")
            job = await wait_until(lambda: (j := bot.job_for(PROMPTS["cancel"])) and j["status"] == "running" and j, what="running")

            async def running_seen() -> bool:
                # Both processes read the same database: each reports the running job.
                found = await server.query('videobot_jobs_in_state{state="running"}')
                return len(found) == 2 and all(v == 1 for v in found.values())

            await wait_until(running_seen, timeout=30, what="Prometheus to see the running job")
            await slack.slash(url, "/video", f"cancel {job['id']}")
            await wait_until(lambda: bot.job_for(PROMPTS["cancel"])["status"] == "cancelled", what="the cancel")

            async def outcomes() -> dict[str, float] | None:
                found = await server.query("sum by (outcome) (videobot_jobs_finished_total)")
                by = {dict(k)["outcome"]: v for k, v in found.items()}
                return by if sum(by.values()) >= 3 else None

            by_outcome = await wait_until(outcomes, timeout=30, what="three outcomes in Prometheus")
            assert by_outcome == {"completed": 1.0, "failed": 1.0, "cancelled": 1.0}

            async def idle() -> dict[str, float] | None:
                found = await server.query("max by (state) (videobot_jobs_in_state)")
                states = {dict(k)["state"]: v for k, v in found.items()}
                return states if states.get("running") == 0 else None

            states = await wait_until(idle, timeout=30, what="the running gauge back to 0")
            assert states == {s: 0.0 for s in ("queued", "submitting", "running", "downloading", "delivering")}
            roles = await server.query("videobot_process_info")
            assert sorted(dict(k)["role"] for k in roles) == ["all", "worker"]
        finally:
            server.stop()
