"""Log records without secrets, whoever logs them.

Our own log calls name ids and kinds, never a reply's text. But the client libraries log
what they send at DEBUG (slack_sdk a response_url's body, discord.py a message's content),
and a private answer may hold a personal gallery link; an exception's text may hold a URL
with a token. So every record is cleaned as it is made, before any handler sees it: the
configured secrets (bot tokens, signing secret, API keys, the web secret) and the token of
any gallery link (`/g/TOKEN`) are replaced by a mark. Records are only made for enabled
levels, so at INFO this costs nothing on the debug chatter.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr

from bot.config import Settings

#: A personal link's token: a signed grant that opens someone's gallery.
_LINK_TOKEN = re.compile(r"(/g/)[\w.~%-]{8,}")
#: Shorter values are not secrets worth a scan of every record (and would mark common words).
_MIN_SECRET = 8
REDACTED = "[redacted]"

_secrets: tuple[str, ...] = ()
_made_by: Any = None


def protect(secrets: Iterable[str]) -> None:
    """Clean every log record of these values (and of link tokens) from now on."""
    global _secrets, _made_by
    _secrets = tuple(sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True))
    if _made_by is None:
        _made_by = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_clean_record)


def settings_secrets(settings: Settings) -> list[str]:
    """Every SecretStr value the settings hold, in every section."""
    found: list[str] = []
    for name in ("core", "local", "openai", "runway", "flux", "fal", "slack", "discord", "comfyui"):
        section = getattr(settings, name)
        for field in type(section).model_fields:
            value = getattr(section, field)
            if isinstance(value, SecretStr):
                found.append(value.get_secret_value())
    return found


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _LINK_TOKEN.sub(r"\1" + REDACTED, text) if "/g/" in text else text


def _clean_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record: logging.LogRecord = _made_by(*args, **kwargs)
    try:
        message = record.getMessage()
    except Exception:
        return record  # a broken format: logging reports it as it would have
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None:
        trace = logging.Formatter().formatException(record.exc_info)
        clean = redact(trace)
        if clean != trace:
            record.exc_text = clean  # what handlers print instead of formatting the traceback again
    return record
