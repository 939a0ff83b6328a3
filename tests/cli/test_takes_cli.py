"""Takes from the command line, as a user runs it (`python -m bot ...` in a fresh directory, the
`local` pipeline): `--takes 3 --out DIR` writes take-1.mp4 … take-3.mp4 and contact-sheet.png,
`show --json` lists the takes, `use` and `more` do what the chat's buttons do; a kill -9 in the
middle of a set and `videobot run` afterwards: every take made once, the set delivered once.
The CLI takes every option the chat commands take."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from bot.cli import build_parser
from bot.core.commands import _ALLOWED, COMMANDS
from bot.core.take_set import middle_frame
from tests.helpers import assert_video
from tests.system.test_crash_e2e import _cli, _env, _wait_db

pytestmark = pytest.mark.timeout(240)


def diff(a: Image.Image, b: Image.Image) -> float:
    a, b = a.convert("RGB"), b.convert("RGB").resize(a.size)
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def tiles(sheet: Path, n: int) -> list[Image.Image]:
    """The n pictures of a contact sheet (360 px tiles, 6 px gaps, an 18 px caption row)."""
    image = Image.open(sheet).convert("RGB")
    height = image.height - 2 * 6 - 18
    return [image.crop((6 + i * 366, 6, 6 + i * 366 + 360, 6 + height)) for i in range(n)]


def check_sheet(sheet: Path, takes: list[Path]) -> None:
    shown = tiles(sheet, len(takes))
    for i, take in enumerate(takes):
        own = diff(shown[i], middle_frame(take))
        others = [diff(shown[i], middle_frame(t)) for t in takes if t != take]
        assert own < 8 and all(own * 3 < o for o in others), (i, own, others)


def test_takes_out_dir_show_use_and_more(tmp_path: Path) -> None:
    out = tmp_path / "set"
    made = _cli(tmp_path, "generate", "three paper boats on a pond", "--takes", "3", "--seconds", "1", "--size", "128x72", "--out", str(out))
    set_id = made.stdout.split()[1]
    assert sorted(p.name for p in out.iterdir()) == ["contact-sheet.png", "take-1.mp4", "take-2.mp4", "take-3.mp4"]
    takes = [out / f"take-{k}.mp4" for k in (1, 2, 3)]
    for take in takes:
        assert_video(take, width=128, height=72, seconds=1)
    check_sheet(out / "contact-sheet.png", takes)
    shown = json.loads(_cli(tmp_path, "show", set_id, "--json").stdout)
    assert shown["kind"] == "takes" and [t["take"] for t in shown["takes"]] == [1, 2, 3]
    assert [t["status"] for t in shown["takes"]] == ["completed"] * 3 and [t["seed"] for t in shown["takes"]] == shown["state"]["seeds"]
    assert all(Path(t["file"]).name == "video.mp4" for t in shown["takes"]) and len({t["seed"] for t in shown["takes"]}) == 3

    # Use 2: take 2 alone (the same file, nothing made again); twice is refused.
    used = _cli(tmp_path, "use", set_id, "2", "--out", str(tmp_path / "two.mp4"))
    assert (tmp_path / "two.mp4").read_bytes() == takes[1].read_bytes(), used.stdout
    again = subprocess.run([sys.executable, "-m", "bot", "use", set_id, "2"], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True)
    assert again.returncode == 1 and "already posted on its own" in again.stderr

    # More like 1: three new takes from take 1's first frame (local animates an image).
    more = _cli(tmp_path, "more", set_id, "1", "--out", str(tmp_path / "more"))
    assert sorted(p.name for p in (tmp_path / "more").iterdir()) == ["contact-sheet.png", "take-1.mp4", "take-2.mp4", "take-3.mp4"], more.stdout
    new = json.loads(_cli(tmp_path, "show", more.stdout.split()[1], "--json").stdout)
    assert new["parent_id"] == set_id and new["state"]["more_like"] == {"set": set_id, "take": 1, "from": "first frame"}


def test_too_many_takes_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "bot", "generate", "a fox", "--takes", "5"], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 1 and "at most 4 takes" in refused.stderr and "--takes 4" in refused.stderr
    assert "no jobs yet" in _cli(tmp_path, "jobs").stdout


def test_kill_9_mid_set_then_run_makes_each_take_once_and_delivers_once(tmp_path: Path) -> None:
    env = _env(tmp_path, VIDEOBOT_MAX_RUNNING_PER_USER="4")
    env.pop("VIDEOBOT_LOCAL_FPS")  # 24 fps: renders long enough to be killed in the middle
    db = tmp_path / "data" / "videobot.sqlite3"
    out = tmp_path / "set"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "generate", "a slow pan across a lake", "--takes", "3", "--seconds", "4", "--size", "640x360", "--out", str(out)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_db(db, "SELECT 1 FROM jobs WHERE json_extract(state_json, '$.take') IS NOT NULL AND status = 'running'")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists(), "killed before the set was delivered"
    resumed = subprocess.run(
        [sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    with sqlite3.connect(db) as conn:
        (set_id,) = conn.execute("SELECT id FROM jobs WHERE kind = 'takes'").fetchone()
        rows = conn.execute("SELECT id, status FROM jobs WHERE parent_id = ?", (set_id,)).fetchall()
        assert len(rows) == 3 and {s for _, s in rows} == {"completed"}, rows
        for take_id, _ in rows:
            events = [r[0] for r in conn.execute("SELECT status FROM job_events WHERE job_id = ? ORDER BY id", (take_id,))]
            assert events.count("submitting") == 1, (take_id, events)  # created once
        set_events = [r[0] for r in conn.execute("SELECT status FROM job_events WHERE job_id = ? ORDER BY id", (set_id,))]
        assert set_events.count("delivering") == 1 and set_events[-1] == "completed", set_events
    assert sorted(p.name for p in out.iterdir()) == ["contact-sheet.png", "take-1.mp4", "take-2.mp4", "take-3.mp4"]
    for k in (1, 2, 3):
        assert_video(out / f"take-{k}.mp4", width=640, height=360, seconds=4)


def test_the_cli_takes_every_option_the_chat_commands_take() -> None:
    """Each chat command with a CLI twin: every `--flag` the chat grammar accepts is a CLI option."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))  # type: ignore[union-attr]
    twins = {"video": "generate", "image": "image", "story": "story", "extend": "extend", "animate": "animate", "jobs": "jobs"}
    for chat, flags in _ALLOWED.items():
        assert chat in COMMANDS and chat in twins, f"/{chat} has options but no CLI command is compared with it"
        cli = sub.choices[twins[chat]]
        options = {o.lstrip("-") for o in cli._option_string_actions}
        assert set(flags) <= options, f"videobot {twins[chat]} lacks {sorted(set(flags) - options)} that /{chat} takes"
    # The typed equivalents of the set's buttons exist in both.
    assert {"use", "more"} <= set(COMMANDS) and {"use", "more"} <= set(sub.choices)
