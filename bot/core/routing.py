"""Which pipeline a job runs on: A/B splits chosen per job, fallbacks named per pipeline.

Both come from settings as short, env-friendly strings (pipeline names hold `+` and
`-`, never `:`, `,`, `;` or `=`):

    VIDEOBOT_FALLBACKS=runway:sora,local;gpt-image+runway:flux+runway,runway
    VIDEOBOT_AB_SPLITS=ab:runway=50,gpt-image+runway=50
"""
from __future__ import annotations

import hashlib

from pydantic import BaseModel


class Split(BaseModel):
    name: str
    #: (pipeline, weight) in the order written.
    arms: list[tuple[str, float]]

    def choose(self, key: str) -> str:
        """The arm for `key` (a job id): stable for that key, spread by the weights across keys."""
        total = sum(weight for _, weight in self.arms)
        digest = hashlib.sha256(f"{self.name}:{key}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * total
        for pipeline, weight in self.arms:
            if point < weight:
                return pipeline
            point -= weight
        return self.arms[-1][0]


def _entries(text: str) -> list[tuple[str, str]]:
    out = []
    for entry in text.split(";"):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, rest = entry.partition(":")
        if not sep or not name.strip() or not rest.strip():
            raise ValueError(f"'{entry}' is not NAME:VALUES")
        out.append((name.strip(), rest.strip()))
    return out


def parse_fallbacks(text: str) -> dict[str, tuple[str, ...]]:
    """`runway:sora,local;flux+runway:runway` → {'runway': ('sora', 'local'), 'flux+runway': ('runway',)}."""
    result: dict[str, tuple[str, ...]] = {}
    for name, rest in _entries(text):
        chain = tuple(p.strip() for p in rest.split(",") if p.strip())
        if name in chain:
            raise ValueError(f"pipeline '{name}' cannot fall back to itself")
        result[name] = chain
    return result


def parse_splits(text: str) -> dict[str, Split]:
    """`ab:runway=50,gpt-image+runway=50` → {'ab': Split(arms=[('runway', 50), ('gpt-image+runway', 50)])}."""
    result: dict[str, Split] = {}
    for name, rest in _entries(text):
        arms: list[tuple[str, float]] = []
        for arm in rest.split(","):
            pipeline, sep, weight = arm.strip().partition("=")
            try:
                value = float(weight) if sep else 1.0
            except ValueError:
                raise ValueError(f"weight '{weight}' of '{pipeline}' in split '{name}' is not a number") from None
            if value < 0:
                raise ValueError(f"weight of '{pipeline}' in split '{name}' is negative")
            arms.append((pipeline.strip(), value))
        if sum(w for _, w in arms) <= 0:
            raise ValueError(f"split '{name}' has no positive weight")
        result[name] = Split(name=name, arms=arms)
    return result
