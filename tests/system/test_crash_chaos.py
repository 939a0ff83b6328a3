"""kill -9 in every job state: the real `videobot run`, restarted after each kill, loses nothing and does nothing twice.

The bot runs as a child process in HTTP-mode Slack against the Slack emulator, with the
OpenAI and Runway emulators as providers. /video commands arrive as signed slash
commands; the process is killed with SIGKILL when the database shows a job in the target
state (plus a seeded random moment), and started again, until every job has ended. Per
job: exactly one create at each paid provider, exactly one file message in the channel,
one status message showing the ending, and an event log that only moves forward (see
tests/chaos/verdict.py for the exact rules). `make chaos` runs the long version.

Three kills per pipeline here; together they cover every state on every kind of pipeline.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import ChaosConfig, World, run_chaos, summary

pytestmark = pytest.mark.timeout(240)

#: Kill targets per pipeline: across the four, each state is hit on a remote and on a chained pipeline.
TARGETS = {
    "local": ["queued", "running", "delivering"],
    "sora": ["submitting", "running", "downloading"],
    "runway": ["queued", "downloading", "delivering"],
    "gpt-image+runway": ["submitting", "running", "delivering"],
}


@pytest.mark.parametrize("pipeline", list(TARGETS))
async def test_sigkill_in_each_state_neither_loses_nor_repeats_a_job(pipeline: str, tmp_path: Path) -> None:
    config = ChaosConfig(pipeline=pipeline, kills=len(TARGETS[pipeline]), targets=TARGETS[pipeline], seed=9)
    async with World(tmp_path / "emulators") as world:
        result = await run_chaos(world, tmp_path, config)
    assert result.verdicts, "no job was recorded"
    assert not result.failures(), summary(result)
    missed = [f"kill {k.index}: no job was ever seen {k.target}" for k in result.kills if k.job_id is None]
    assert not missed, "\n".join(missed)
