"""Media retention: old files go, rows stay, and the job's buttons say the file is gone."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.app import App
from bot.core.errors import JobStateError
from bot.core.models import GenerateRequest, JobStatus, Origin
from bot.core.retention import expire_media
from storage.db import LATEST_VERSION

ORIGIN = Origin(platform="cli", user_id="u")


async def test_old_media_is_removed_and_the_row_kept(app: App) -> None:
    old = await app.service.submit(GenerateRequest(prompt="an old clip", seconds=1, size="128x72"), ORIGIN)
    old = await asyncio.wait_for(app.runner.wait(old.id), 20)
    new = await app.service.submit(GenerateRequest(prompt="a new clip", seconds=1, size="128x72"), ORIGIN)
    new = await asyncio.wait_for(app.runner.wait(new.id), 20)
    await app.store.update(old.id, finished_at=time.time() - 10 * 86400)
    folder = Path(old.output_path or "").parent
    assert folder.exists()

    assert await expire_media(app.store, app.media, 7) == 1
    assert await expire_media(app.store, app.media, 7) == 0, "a second sweep finds nothing more"
    kept = await app.store.get(old.id)
    assert kept is not None and kept.status is JobStatus.COMPLETED and kept.media_expired_at is not None
    assert kept.output_path is None and not folder.exists()
    assert Path(new.output_path or "").exists(), "a recent job keeps its files"
    with pytest.raises(JobStateError, match="file was removed"):
        await app.service.remix(old.id, "again at night", ORIGIN)
    with pytest.raises(JobStateError, match="file was removed"):
        await app.service.extend(old.id, ORIGIN)
    assert any("retention" in (e["detail"] or "") for e in await app.store.events(old.id))


def test_gc_command(tmp_path: Path, settings: object) -> None:
    env = {"VIDEOBOT_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    off = subprocess.run([sys.executable, "-m", "bot", "gc"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert off.returncode == 2 and "retention is off" in off.stderr
    on = subprocess.run([sys.executable, "-m", "bot", "gc", "--days", "30"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert on.returncode == 0 and "removed the files of 0 jobs" in on.stdout, on.stderr
    assert LATEST_VERSION >= 2
