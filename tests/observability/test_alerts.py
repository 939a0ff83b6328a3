"""docs/alerts.yml: Prometheus's own promtool accepts it, and each alert fires on the series it is
about (promtool test rules, synthetic series) and stays quiet otherwise."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "alerts.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "Debian's promtool (apt-get install prometheus) is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return found


def test_promtool_check_rules_accepts_the_alerts() -> None:
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    names = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert names == {"VideobotQueueStuck", "VideobotPipelineFailing", "VideobotDeliveriesFailing", "VideobotSpendNearBudget", "VideobotNoWorkerAlive"}


def test_alerts_fire_on_what_they_watch(tmp_path: Path) -> None:
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # Two processes report the same queue (read from the database): 15 min old and growing.
                    {"series": 'videobot_queue_oldest_seconds{instance="a"}', "values": "900+60x20"},
                    {"series": 'videobot_queue_oldest_seconds{instance="b"}', "values": "900+60x20"},
                    {"series": 'videobot_processes_alive{instance="a",role="worker"}', "values": "0x20"},
                    {"series": 'videobot_processes_alive{instance="a",role="all"}', "values": "0x20"},
                    {"series": 'videobot_process_info{instance="a",role="gateway",version="0.1.0"}', "values": "1x20"},
                    {"series": 'videobot_jobs_finished_total{instance="a",kind="generate",pipeline="sora",outcome="failed"}', "values": "0+1x40"},
                    {"series": 'videobot_jobs_finished_total{instance="a",kind="generate",pipeline="sora",outcome="completed"}', "values": "0+1x40"},
                    {"series": 'videobot_jobs_finished_total{instance="a",kind="generate",pipeline="local",outcome="completed"}', "values": "0+1x40"},
                    {"series": 'videobot_deliveries_total{instance="a",platform="slack",outcome="undelivered"}', "values": "0 0 1 1 1"},
                    {"series": 'videobot_deliveries_total{instance="a",platform="discord",outcome="posted"}', "values": "0+1x10"},
                ],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "VideobotQueueStuck", "exp_alerts": [{
                        "exp_labels": {"severity": "page"},
                        "exp_annotations": {
                            "summary": "A job has waited in the queue for more than 10 minutes",
                            "description": "Oldest queued job: 25m 0s. Workers may be down, full, or unable to claim.",
                        },
                    }]},
                    {"eval_time": "10m", "alertname": "VideobotNoWorkerAlive", "exp_alerts": [{
                        "exp_labels": {"severity": "page"},
                        "exp_annotations": {
                            "summary": "No process is running jobs",
                            "description": "No worker (or `videobot run --role all`) has a recent heartbeat in the database; queued jobs wait.",
                        },
                    }]},
                    {"eval_time": "40m", "alertname": "VideobotPipelineFailing", "exp_alerts": [{
                        "exp_labels": {"severity": "warn", "pipeline": "sora"},
                        "exp_annotations": {"summary": "More than a quarter of sora jobs fail", "description": "Failure ratio 50% over 30 minutes."},
                    }]},
                    {"eval_time": "4m", "alertname": "VideobotDeliveriesFailing", "exp_alerts": [{
                        "exp_labels": {"severity": "warn", "platform": "slack"},
                        "exp_annotations": {
                            "summary": "Finished videos could not be posted on slack",
                            "description": "1 results left undelivered in 30 minutes; `videobot redeliver ID` posts them again.",
                        },
                    }]},
                    {"eval_time": "10m", "alertname": "VideobotSpendNearBudget", "exp_alerts": []},
                ],
            }
        ],
    }
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
