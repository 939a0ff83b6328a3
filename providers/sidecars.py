"""Sidecar files: a small JSON file beside each remote job (`work_dir/ID.json`) holding what a
provider must still know about the job after a restart (its URLs, that it is ours, what an
extension joins). Each provider names its own files; reading and writing them is done here once.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_sidecar(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def read_sidecar(path: Path) -> dict[str, Any]:
    """The file's data; empty when there is none, or it is unreadable (a write cut short by a
    crash): the caller falls back to what it can work out without it."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except ValueError:
        return {}
