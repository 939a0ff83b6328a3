"""JSON log lines of a real `videobot run` after real jobs: parseable, with the issue's fields, and
no secret the run was configured with."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from bot.observability.logs import JsonFormatter, choose_format
from tests.fakes.slack_api import BOT_TOKEN, SIGNING_SECRET
from tests.observability.support import OPENAI_KEY, OpsWorld, wait_until
from tests.observability.test_metrics_e2e import PROMPTS, _run_three_jobs

FIELDS = ("time", "level", "logger", "message")


def _json_lines(text: str) -> list[dict]:  # type: ignore[type-arg]
    lines = []
    for raw in text.splitlines():
        if raw.startswith("videobot:"):
            continue  # what `videobot run` prints for the operator (stdout), not a log line
        lines.append(json.loads(raw))  # every other line must be one JSON object
    return lines


async def test_json_lines_carry_the_job_fields_and_every_state_change(tmp_path: Path) -> None:
    async with OpsWorld(tmp_path) as world:
        bot = await _run_three_jobs(world, tmp_path)
        jobs = {j["prompt"]: j for j in bot.jobs()}
        done = jobs[PROMPTS["done"]]
        await wait_until(lambda: f'"job {done["id"]}: completed"' in bot.log_text(), what="the completed line")
        lines = _json_lines(bot.log_text())
    assert lines, "no log lines"
    for line in lines:
        for field in FIELDS:
            assert field in line, f"{field} missing in {line}"
    states = [line["state"] for line in lines if line.get("job_id") == done["id"] and line["logger"] == "bot.jobs"]
    assert states == ["queued", "submitting", "running", "downloading", "delivering", "completed"]
    tagged = [line for line in lines if line.get("job_id") == done["id"]]
    assert all(line["pipeline"] == "local" and line["tenant"] == "slack:T0VIDEO" for line in tagged)
    assert any(line.get("provider") == "local" for line in tagged)
    failed = jobs[PROMPTS["fail"]]
    # The runner's own warning about the failure carries the job's fields without passing them.
    warnings = [line for line in lines if line.get("job_id") == failed["id"] and line["logger"] == "bot.core.runner"]
    assert warnings and warnings[0]["level"] == "warning" and warnings[0]["provider"] == "sora"


async def test_no_secret_in_what_the_run_logged(tmp_path: Path) -> None:
    async with OpsWorld(tmp_path) as world:
        bot = await _run_three_jobs(world, tmp_path)
        readyz = (await bot.get("/readyz")).text
        text = bot.log_text()
    for secret in (BOT_TOKEN, SIGNING_SECRET, OPENAI_KEY):
        assert secret not in text, f"{secret!r} in the log"
        assert secret not in readyz


def test_format_defaults_to_text_on_a_terminal_and_json_elsewhere() -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    class Pipe:
        def isatty(self) -> bool:
            return False

    assert choose_format("", Tty()) == "text" and choose_format("", Pipe()) == "json"
    assert choose_format("JSON", Tty()) == "json" and choose_format("text", Pipe()) == "text"


def test_json_formatter_keeps_the_traceback_in_the_line() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), exc_info=True)
        import sys

        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed here" and line["level"] == "error" and "ValueError: bad" in line["exc"]
