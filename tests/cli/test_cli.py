"""The CLI and the console adapter as a user runs them: real processes, real files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import assert_video

ROOT = Path(__file__).resolve().parents[2]


def videobot(tmp_path: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOBOT_", "OPENAI_", "RUNWAYML_", "BFL_", "SLACK_", "DISCORD_"))}
    clean.update({"VIDEOBOT_DATA_DIR": str(tmp_path / "data"), "VIDEOBOT_LOCAL_FPS": "12", "PYTHONPATH": str(ROOT)})
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=tmp_path, env=clean, input=stdin, capture_output=True, text=True, timeout=120
    )


def test_generate_prints_job_and_mp4_and_copies_out(tmp_path: Path) -> None:
    out = tmp_path / "clips" / "coupe.mp4"
    result = videobot(tmp_path, "generate", "a teal coupe crossing a desert at noon", "--seconds", "2", "--size", "320x180", "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    job_id = next(line.split(": ")[1] for line in lines if line.startswith("job: "))
    video = Path(next(line.split(": ", 1)[1] for line in lines if line.startswith("video: ")))
    assert video.is_absolute()
    assert_video(video, width=320, height=180, seconds=2)
    assert out.read_bytes() == video.read_bytes()
    # Plain lines when not on a terminal, one per state.
    assert any("Done in" in line for line in lines)

    shown = videobot(tmp_path, "show", job_id, "--json")
    data = json.loads(shown.stdout)
    assert data["status"] == "completed" and [e["status"] for e in data["events"]][-1] == "completed"
    listed = json.loads(videobot(tmp_path, "jobs", "--json").stdout)
    assert [j["id"] for j in listed] == [job_id]

    remix = videobot(tmp_path, "remix", job_id[:5], "a red coupe in the rain")
    assert remix.returncode == 0, remix.stderr
    extend = videobot(tmp_path, "extend", job_id, "--seconds", "1")
    assert extend.returncode == 0, extend.stderr
    extended = Path(next(line.split(": ", 1)[1] for line in extend.stdout.splitlines() if line.startswith("video: ")))
    assert_video(extended, width=320, height=180, seconds=3)


def test_failure_is_one_clear_line_and_nonzero(tmp_path: Path) -> None:
    result = videobot(tmp_path, "generate", "a fox", "--pipeline", "nope")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("videobot: Unknown pipeline 'nope'. Available: ") and "local" in lines[0]
    assert "Traceback" not in result.stderr
    missing = videobot(tmp_path, "show", "qqqqqqqq")
    assert missing.returncode == 1 and "No job 'qqqqqqqq'" in missing.stderr


@pytest.mark.parametrize(
    ("var", "value", "expect"),
    [
        ("VIDEOBOT_MAX_CONCURRENT_JOBS", "lots", "VIDEOBOT_MAX_CONCURRENT_JOBS"),
        ("VIDEOBOT_MAX_CONCURRENT_JOBS", "0", "greater than or equal to 1"),
        ("VIDEOBOT_LOG_LEVEL", "LOUD", "VIDEOBOT_LOG_LEVEL"),
    ],
)
def test_invalid_setting_stops_startup_with_one_line(tmp_path: Path, var: str, value: str, expect: str) -> None:
    result = videobot(tmp_path, "jobs", env={var: value})
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in result.stderr


def test_console_takes_piped_commands_and_exits_when_jobs_are_done(tmp_path: Path) -> None:
    script = "\n".join(
        [
            "/help",
            "/video a lighthouse in a storm --seconds 1 --size 256x144",
            "/video --seconds 2",
            "/video a fox --seconds many",
            "/frobnicate",
            "/image a red kite --size 256x144",
            "/jobs",
        ]
    )
    result = videobot(tmp_path, "run", stdin=script + "\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "/video PROMPT" in out  # help
    assert "error: The prompt is empty" in out
    assert "error: --seconds takes a whole number, not 'many'." in out
    assert "error: Unknown command /frobnicate" in out
    videos = [line.split("video: ", 1)[1] for line in out.splitlines() if "] video: " in line]
    images = [line.split("image: ", 1)[1] for line in out.splitlines() if "] image: " in line]
    assert len(videos) == 1 and len(images) == 1, out
    assert_video(videos[0], width=256, height=144, seconds=1)
    assert Path(images[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Queued" in out and "Done in" in out
