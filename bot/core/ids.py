"""Job ids and seeds."""
from __future__ import annotations

import random
import secrets

_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: ids get typed by hand


#: Seeds need no secrecy, only variety; one urandom read per seed was measurable in a burst.
_seeds = random.Random()


def new_seed() -> int:
    return _seeds.randrange(2**31)


def new_job_id() -> str:
    # One urandom read per id (secrets.choice reads once per character): 8 characters from a
    # 31-letter alphabet, by rejection so every letter is equally likely.
    out: list[str] = []
    while len(out) < 8:
        for byte in secrets.token_bytes(12):
            if byte < 248 and len(out) < 8:  # 248 = 8 * 31
                out.append(_ID_ALPHABET[byte % 31])
    return "".join(out)
