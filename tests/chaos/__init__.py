"""Real-process crash tests: `videobot run` as a child process, killed with SIGKILL in every job state.

`World` starts the Slack, OpenAI and Runway emulators in the test process; `run_chaos`
drives the real bot against them and judges every job (see harness.py and verdict.py).
Used by tests/system/test_crash_chaos.py, tests/system/test_two_processes.py, bench/chaos.py and
bench/recovery.py.
"""
from tests.chaos.db import STATES, DbView
from tests.chaos.emulators import Latency, World
from tests.chaos.harness import ChaosConfig, ChaosResult, run_chaos, summary
from tests.chaos.process import BotProcess, clean_env, free_port
from tests.chaos.verdict import PIPELINES, judge

__all__ = [
    "PIPELINES", "STATES", "BotProcess", "ChaosConfig", "ChaosResult", "DbView", "Latency", "World",
    "clean_env", "free_port", "judge", "run_chaos", "summary",
]
