"""Advisory lock keys: (NAMESPACE, key) pairs for pg_advisory_xact_lock(int, int).

Transaction-scoped, so a lock is gone when its transaction ends, however it ends.
"""
from __future__ import annotations

#: Distinguishes videobot's locks from any other application's on the same database.
NAMESPACE = 0x76626F74 - (1 << 31)  # "vbot", as a signed int4

MIGRATE = 1
#: Every other lock is a name (a spend scope, "claim", "signals": storage.sql.Write.locks), taken as
#: (SPEND_NAMESPACE, hashtext(name)) by storage.sql.PostgresDialect.lock, in sorted order.
SPEND_NAMESPACE = NAMESPACE + 1
