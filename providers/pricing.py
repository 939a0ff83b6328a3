"""Published list prices, as defaults for the price settings, and the arithmetic on them.

Providers price their own jobs (`estimate_cost`); the tables here are only the
starting values of the settings (`RUNWAYML_CREDITS_PER_SECOND`, `BFL_PRICES`), so an
operator can follow a price change without a release.
"""
from __future__ import annotations

import math

#: Runway API credits per second of output (docs.dev.runwayml.com/guides/pricing); 1 credit = $0.01.
RUNWAY_CREDITS_PER_SECOND: dict[str, float] = {
    "gen4_turbo": 5,
    "gen4.5": 12,
    "veo3.1": 40,
    "veo3.1_fast": 15,
}
#: For a Runway model id not in the table: the dearest listed rate, so a budget is never undershot.
RUNWAY_UNKNOWN_CREDITS_PER_SECOND = 40.0
RUNWAY_CREDIT_USD = 0.01

#: Black Forest Labs, USD per started megapixel of output (bfl.ai/pricing).
FLUX_USD_PER_MEGAPIXEL: dict[str, float] = {
    "flux-2-pro": 0.03,
    "flux-2-max": 0.07,
    "flux-2-flex": 0.06,
}


def credits_to_usd(credits: float, credit_usd: float = RUNWAY_CREDIT_USD) -> float:
    return round(credits * credit_usd, 4)


def runway_credits(model: str, seconds: int, table: dict[str, float], unknown_rate: float) -> float:
    return table.get(model, unknown_rate) * seconds


def flux_cost(model: str, width: int, height: int, table: dict[str, float]) -> float | None:
    """None for a model with no listed price (the job then has no estimate)."""
    rate = table.get(model)
    if rate is None:
        return None
    megapixels = max(1, math.ceil(width * height / 1_000_000))
    return round(rate * megapixels, 4)


#: USD per second of output by `model@mode` (Kling's API price list, late 2026); an operator
#: follows a price change with KLING_PRICES. Extensions cost what the model's seconds cost.
KLING_PRICES: dict[str, float] = {
    "kling-v1@std": 0.028, "kling-v1@pro": 0.098,
    "kling-v1-5@std": 0.056, "kling-v1-5@pro": 0.098,
    "kling-v1-6@std": 0.056, "kling-v1-6@pro": 0.098,
    "kling-v2-master@pro": 0.28,
    "kling-v2-1@std": 0.056, "kling-v2-1@pro": 0.098,
    "kling-v2-1-master@pro": 0.28,
    "kling-v2-5-turbo@std": 0.042, "kling-v2-5-turbo@pro": 0.07,
    "kling-v2-6@pro": 0.07,
}  # fmt: skip
