"""Encryption at rest for what the bot keeps on behalf of others (workspace tokens): Fernet
(AES-128-CBC with HMAC-SHA256, from the `cryptography` package) under a key from
VIDEOBOT_SECRET_KEY, or a random key kept in the data dir (mode 0600, made once, never replaced).

Any VIDEOBOT_SECRET_KEY of at least 32 bytes works: it is stretched into Fernet's key with
SHA-256. Losing the key loses the tokens (workspaces reinstall); a wrong key is told as such,
never taken for an empty store.
"""
from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from bot.config import CoreSettings
from bot.core.errors import ConfigError

FILE_NAME = "secret_key"
MIN_BYTES = 32


class WrongSecretKey(ConfigError):
    code = "wrong_secret_key"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key).digest()))

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise WrongSecretKey(
                "A stored secret does not open with this key: VIDEOBOT_SECRET_KEY (or the data dir's secret_key file) "
                "changed since it was written. Put the old key back, or reinstall the app in each workspace."
            ) from None

    def __repr__(self) -> str:  # never the key, whatever logs it
        return "SecretBox(…)"


def load_box(settings: CoreSettings) -> SecretBox:
    if settings.secret_key is not None:
        key = settings.secret_key.get_secret_value().encode()
        if len(key) < MIN_BYTES:
            raise ConfigError(
                f"VIDEOBOT_SECRET_KEY is {len(key)} bytes; it needs at least {MIN_BYTES}. "
                "Make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return SecretBox(key)
    return SecretBox(_file_key(Path(settings.data_dir) / FILE_NAME))


def _file_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # made before, by this process or another: that one is the key
    else:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_urlsafe(48).encode())
            out.flush()
            os.fsync(out.fileno())
    key = path.read_bytes().strip()
    if len(key) < MIN_BYTES:
        raise ConfigError(f"{path} holds a key of {len(key)} bytes (a crash while it was made?); set VIDEOBOT_SECRET_KEY or restore the file.")
    return key
