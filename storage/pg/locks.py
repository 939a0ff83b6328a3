"""Advisory lock keys: (NAMESPACE, key) pairs for pg_advisory_xact_lock(int, int).

Transaction-scoped, so a lock is gone when its transaction ends, however it ends.
"""
from __future__ import annotations

#: Distinguishes videobot's locks from any other application's on the same database.
NAMESPACE = 0x76626F74 - (1 << 31)  # "vbot", as a signed int4

MIGRATE = 1
#: Serialises claim_queued: the counts behind the caps are read and acted on by one claimer at a time.
CLAIM = 2
#: Serialises publish: signal ids commit in id order, so a reader's cursor never skips one.
SIGNALS = 3
#: Spend scopes use (SPEND_NAMESPACE, hashtext(scope)).
SPEND_NAMESPACE = NAMESPACE + 1
