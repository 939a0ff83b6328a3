"""The key that encrypts workspace tokens at rest (bot/core/secret_box.py): made once as a 0600 file
in the data dir, the same for every process on it; VIDEOBOT_SECRET_KEY instead when set; a
stored secret opened with another key says so instead of reading as garbage."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bot.config import CoreSettings
from bot.core.errors import ConfigError
from bot.core.secret_box import FILE_NAME, WrongSecretKey, load_box


def test_the_generated_key_file_is_private_and_shared_by_every_load(tmp_path: Path) -> None:
    settings = CoreSettings(data_dir=tmp_path)
    sealed = load_box(settings).seal("xoxb-secret")
    assert "xoxb" not in sealed
    mode = stat.S_IMODE(os.stat(tmp_path / FILE_NAME).st_mode)
    assert mode == 0o600, oct(mode)
    assert load_box(settings).open(sealed) == "xoxb-secret"  # another process, the same key


def test_an_environment_key_wins_and_a_wrong_one_is_told_as_such(tmp_path: Path) -> None:
    sealed = load_box(CoreSettings(data_dir=tmp_path, secret_key="a" * 40)).seal("xoxb-secret")
    assert not (tmp_path / FILE_NAME).exists()
    with pytest.raises(WrongSecretKey, match="VIDEOBOT_SECRET_KEY"):
        load_box(CoreSettings(data_dir=tmp_path, secret_key="b" * 40)).open(sealed)
    with pytest.raises(ConfigError, match="at least 32"):
        load_box(CoreSettings(data_dir=tmp_path, secret_key="short"))
