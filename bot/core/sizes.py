"""Sizes as people type them in chat: WIDTHxHEIGHT or an aspect ratio.

The one place a typed size (`--size`, Discord's size option, a size setting) is read; every
adapter and the parser use it, so `16:9` means the same size everywhere.
"""
from __future__ import annotations

from providers.errors import InvalidRequest

#: Aspect ratios every platform accepts for a size, and the size each one means.
ASPECT_RATIOS: dict[str, str] = {"16:9": "1280x720", "9:16": "720x1280", "1:1": "960x960", "4:3": "1104x832", "3:4": "832x1104"}


def normalise_size(value: str) -> str:
    """`16:9` → `1280x720`; WIDTHxHEIGHT as given (the service checks it against the pipeline)."""
    text = value.strip()
    if not text or any(ch.isspace() for ch in text):
        raise InvalidRequest(f"'{value}' is not a size. Give WIDTHxHEIGHT (1280x720) or a ratio ({', '.join(ASPECT_RATIOS)}).")
    if ":" in text:
        if text not in ASPECT_RATIOS:
            raise InvalidRequest(f"Aspect ratio {text} is not one of {', '.join(ASPECT_RATIOS)}; or give --size WxH.")
        return ASPECT_RATIOS[text]
    return text
