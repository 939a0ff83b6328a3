"""Where a provider call's outcome is known, who wants to hear about it (metrics).

Providers must not import the bot, so the bot registers an observer here at start-up
(`bot.observability.metrics.install`) and the polling engine reports to it. With none
registered every report is a no-op. Labels are the provider's name and a fixed outcome,
never anything from a request.
"""
from __future__ import annotations

from typing import Literal, Protocol

Outcome = Literal["ok", "rate_limited", "retried", "error"]


class ProviderObserver(Protocol):
    def request(self, provider: str, outcome: Outcome) -> None: ...
    def rate_limit_wait(self, provider: str) -> None: ...


_observer: ProviderObserver | None = None


def set_observer(observer: ProviderObserver | None) -> None:
    global _observer
    _observer = observer


def request(provider: str | None, outcome: Outcome) -> None:
    if _observer is not None and provider:
        _observer.request(provider, outcome)


def rate_limit_wait(provider: str | None) -> None:
    if _observer is not None and provider:
        _observer.rate_limit_wait(provider)
