"""Settings for fallbacks and A/B splits, the first-frame prompt, and the price arithmetic."""
from __future__ import annotations

from collections import Counter

import pytest

from bot.config import load_settings
from bot.core.errors import ConfigError
from bot.core.routing import parse_fallbacks, parse_splits
from providers.pricing import flux_cost
from providers.prompting import enhance_for_video


def test_fallbacks_and_splits_parse() -> None:
    assert parse_fallbacks(" runway:sora, local ; flux+runway:runway") == {"runway": ("sora", "local"), "flux+runway": ("runway",)}
    split = parse_splits("ab:runway=3,gpt-image+runway=1")["ab"]
    picks = Counter(split.choose(str(i)) for i in range(4000))
    assert 0.70 < picks["runway"] / 4000 < 0.80
    assert split.choose("job1") == split.choose("job1")  # stable per job
    assert parse_splits("only:local=0,runway=1")["only"].choose("x") == "runway"


@pytest.mark.parametrize(
    ("var", "value", "text"),
    [
        ("VIDEOBOT_FALLBACKS", "runway", "VIDEOBOT_FALLBACKS"),
        ("VIDEOBOT_FALLBACKS", "runway:runway", "itself"),
        ("VIDEOBOT_AB_SPLITS", "ab:runway=x", "not a number"),
        ("VIDEOBOT_AB_SPLITS", "ab:runway=0", "no positive weight"),
        ("VIDEOBOT_DAILY_BUDGET_USER_USD", "-1", "VIDEOBOT_DAILY_BUDGET_USER_USD"),
    ],
)
def test_bad_settings_stop_start_up(settings: object, monkeypatch: pytest.MonkeyPatch, var: str, value: str, text: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=text):
        load_settings()


def test_blank_budget_is_no_budget(settings: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_DAILY_BUDGET_USER_USD", "")
    assert load_settings().core.daily_budget_user_usd is None


def test_prompt_enhancement_is_deterministic_and_skips_what_is_said() -> None:
    a = enhance_for_video("a red fox in snow", 1280, 720)
    assert a == enhance_for_video("a red fox in snow", 1280, 720)
    assert a == ("a red fox in snow, cinematic composition, consistent natural lighting, one clear focal point, "
                 "film still, wide establishing shot, high detail, no text or watermarks")  # fmt: skip
    lit = enhance_for_video("close-up of a neon sign, cinematic shot.", 720, 1280)
    assert "lighting" not in lit and "focal point" not in lit and "composition" not in lit
    assert lit.endswith("vertical framing, high detail, no text or watermarks")
    assert len(enhance_for_video("x" * 990, 960, 960)) <= 1000


def test_flux_price_per_started_megapixel() -> None:
    table = {"flux-2-pro": 0.03}
    assert flux_cost("flux-2-pro", 1024, 1024, table) == 0.06  # 1.05 MP: two started
    assert flux_cost("flux-2-pro", 1280, 720, table) == 0.03
    assert flux_cost("unknown", 1280, 720, table) is None
