"""The web gallery's signing key: VIDEOBOT_WEB_SECRET, or a random key kept in the data dir.

Every grant (personal link, session cookie, CSRF token) is an HMAC under this key, so a weak or
empty key lets anyone forge an operator session. Hence:

- a key shorter than `MIN_BYTES`, from the file or the environment, is refused with one line
  (`WeakSigningKey`, a `ConfigError`: the CLI prints it and exits non-zero), never used;
- the file is only ever written whole: a temp file in the same directory, written, fsynced,
  then linked (first start: never over a key another process made a moment before) or renamed
  (rotation) into place, and the directory fsynced. A reader sees no key or a whole key, never
  a half-written one, even across a crash or a full disk;
- `KeyRing` serves a long-running process: it re-reads the file when it was replaced, so
  `videobot web --rotate-secret` ends every session and link in galleries already running.
"""
from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from bot.config import CoreSettings
from bot.core.errors import ConfigError

FILE_NAME = "web_secret"
MIN_BYTES = 32
_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class WeakSigningKey(ConfigError):
    """The signing key is missing bytes: refused rather than used."""

    code = "weak_signing_key"


class KeyFromEnvironment(ConfigError):
    """A rotation was asked while the key comes from VIDEOBOT_WEB_SECRET (not ours to change)."""


def key_path(settings: CoreSettings) -> Path:
    return Path(settings.data_dir) / FILE_NAME


def load(settings: CoreSettings) -> bytes:
    """The key: VIDEOBOT_WEB_SECRET, else the data dir's file (made on first use)."""
    if settings.web_secret is not None:
        return _checked_env(settings.web_secret.get_secret_value().encode())
    path = key_path(settings)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    _write_new(path, replace=False)
    return _read(path)  # ours, or the one another process linked a moment before us


def rotate(settings: CoreSettings) -> Path:
    """A new random key in place of the old one (atomically); every grant signed before is void."""
    if settings.web_secret is not None:
        raise KeyFromEnvironment(
            "The signing key comes from VIDEOBOT_WEB_SECRET: set a new value there (at least 32 bytes) "
            "and restart the bot and the gallery to end every session and link."
        )
    path = key_path(settings)
    _write_new(path, replace=True)
    return path


class KeyRing:
    """The current key for a process that runs for days: the file is stat'ed on each use and
    read again only when it was replaced (a rotation renames a new file over it)."""

    def __init__(self, settings: CoreSettings) -> None:
        self.settings = settings
        self._key = load(settings)
        self._seen = self._identity()

    def current(self) -> bytes:
        if self.settings.web_secret is not None:
            return self._key
        seen = self._identity()
        if seen != self._seen or seen is None:
            self._key = load(self.settings)
            self._seen = self._identity()
        return self._key

    def _identity(self) -> tuple[int, int, int, int] | None:
        if self.settings.web_secret is not None:
            return None
        try:
            st = os.stat(key_path(self.settings))
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _checked_env(key: bytes) -> bytes:
    if len(key) < MIN_BYTES:
        raise WeakSigningKey(
            f"VIDEOBOT_WEB_SECRET is {len(key)} bytes; the gallery's signing key needs at least {MIN_BYTES}. "
            f"Make one with: {_MAKE_ONE}"
        )
    return key


def _read(path: Path) -> bytes:
    key = path.read_bytes().strip()
    if len(key) < MIN_BYTES:
        raise WeakSigningKey(
            f"{path} holds a signing key of {len(key)} bytes (at least {MIN_BYTES} needed): a crash or a full disk "
            f"may have cut it short. Delete the file to make a new key (this ends every gallery session and link), "
            f"or set VIDEOBOT_WEB_SECRET."
        )
    return key


def _write_new(path: Path, *, replace: bool) -> None:
    try:
        _write_whole(path, replace=replace)
    except OSError as exc:  # a full disk, a read-only data dir: nothing half-written is left behind
        raise ConfigError(
            f"Could not write the gallery's signing key to {path} ({exc.strerror or exc}); "
            "free some space or fix the data dir's permissions, or set VIDEOBOT_WEB_SECRET."
        ) from exc


def _write_whole(path: Path, *, replace: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_urlsafe(48).encode())
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(temp, path)
        else:
            try:
                os.link(temp, path)  # fails if another process made the key first: theirs stays
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: a rename, unless a key appeared
                if not path.exists():
                    os.replace(temp, path)
        _fsync_dir(path.parent)
    finally:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass  # renamed into place


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not every platform opens directories; the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
