"""Whether the tests run in CI, where a test that cannot run must fail rather than skip.

CI providers set `CI` to `true`, `True` or `1` (and people type `yes`): any of these counts.
"""
from __future__ import annotations

import os
from typing import NoReturn

import pytest

_TRUTHY = {"1", "true", "yes", "on"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in _TRUTHY


def skip_or_fail(reason: str, *, what: str) -> NoReturn:
    """Skip with the reason; in CI fail instead: `what` must run there."""
    if in_ci():
        pytest.fail(f"CI={os.environ['CI']}: {what} must run, not skip: {reason}")
    pytest.skip(reason)
