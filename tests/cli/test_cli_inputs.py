"""`--image` that is not a readable file: one clear line and a non-zero exit, never a traceback."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli.test_cli import videobot


def unreadable(tmp_path: Path) -> Path:
    """A file this process may not read. Root reads any file mode, but not a write-only sysctl."""
    if os.geteuid() == 0:
        return Path("/proc/sys/vm/compact_memory")
    path = tmp_path / "locked.png"
    path.write_bytes(b"\x89PNG")
    path.chmod(0)
    return path


@pytest.mark.parametrize(
    ("command", "image", "said"),
    [
        ("generate", lambda tmp: Path("/etc"), "'/etc' is a folder, not an image. Give the path of a PNG, JPEG, WebP or GIF file."),
        ("generate", lambda tmp: tmp / "missing.png", "There is no file '{path}'. Check the path."),
        ("generate", unreadable, "Cannot read '{path}': permission denied. Check the file's permissions."),
        ("generate", lambda tmp: tmp / "a-file" / "x.png", "Cannot read '{path}' (Not a directory). Check the path."),
        ("story", lambda tmp: Path("/etc"), "'/etc' is a folder, not an image."),
    ],
)
def test_a_bad_image_path_is_one_line(tmp_path: Path, command: str, image: object, said: str) -> None:
    (tmp_path / "a-file").write_text("x")
    path = image(tmp_path)  # type: ignore[operator]
    result = videobot(tmp_path, command, "a fox in the snow", "--image", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("videobot: " + said.format(path=path)), result.stderr
