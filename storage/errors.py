"""Every exception the store raises, on either backend. A leaf: imports nothing of the project.

Each carries a `code` and a `message` as the core's error taxonomy does, so the core can map
them to replies in one place (or re-export them) without the store importing the core.
A missing job is a plain `KeyError(job_id)`.
"""
from __future__ import annotations

from typing import Protocol


class StoreError(Exception):
    """Base of the store's errors."""

    code = "store_error"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message


class DatabaseTooNew(StoreError):
    """The database's schema is newer than this videobot knows: refused, never downgraded."""

    code = "database_too_new"


class BadDatabaseUrl(StoreError, ValueError):
    code = "bad_database_url"


class StoreClosed(StoreError, RuntimeError):
    code = "store_closed"


class TargetNotEmpty(StoreError):
    """`videobot db copy` into a database holding somebody else's history."""

    code = "target_not_empty"


class StaleWrite(StoreError):
    """A write that was refused because the writer's view of the job is out of date."""

    code = "stale_write"

    def __init__(self, job_id: str, why: str) -> None:
        super().__init__(f"job {job_id}: {why}")
        self.job_id = job_id


class LeaseLost(StaleWrite):
    """The writer no longer holds the job's lease: another runner drives it now."""

    code = "lease_lost"


class AlreadyFinished(StaleWrite):
    """The job reached a terminal state (perhaps set by another process); it is never overwritten."""

    code = "already_finished"


class _Limit(Protocol):
    whose: str
    limit: float


class OverBudget(StoreError):
    """Reserving a job's estimate would pass a spend limit (`storage.spend.SpendLimit`); nothing was written."""

    code = "over_budget"

    def __init__(self, limit: _Limit, spent: float, cost: float) -> None:
        super().__init__(f"{limit.whose} budget: spent {spent:.4f} + {cost:.4f} > {limit.limit:.4f}")
        self.limit = limit
        self.spent = spent
        self.cost = cost


class _QueueLimit(Protocol):
    limit: int


class QueueFull(StoreError):
    """The user already has as many unfinished jobs as `storage.spend.QueueLimit` allows; nothing was written."""

    code = "queue_full"

    def __init__(self, limit: _QueueLimit, pending: int) -> None:
        super().__init__(f"{pending} unfinished jobs (limit {limit.limit})")
        self.limit = limit
        self.pending = pending
