"""Which moderator this bot runs, built from the settings (like `bot.pipelines` for providers)."""
from __future__ import annotations

from bot.config import Settings
from providers.moderation import BlocklistModerator, CombinedModerator, Moderator, OpenAIModerator


def build_moderator(settings: Settings) -> Moderator | None:
    core, oa = settings.core, settings.openai
    mode = core.moderation.lower()
    words = [w.strip() for w in core.blocklist.split(",") if w.strip()]
    blocklist = BlocklistModerator(words)
    if mode == "off":
        return blocklist if words else None  # the operator's own words apply in every mode
    key = (oa.api_key.get_secret_value() if oa.api_key else "") or None
    if mode == "blocklist" or (mode == "auto" and key is None):
        return blocklist if words else None  # an empty list has nothing to check
    if key is None:
        from bot.core.errors import ConfigError

        raise ConfigError("VIDEOBOT_MODERATION=openai needs OPENAI_API_KEY (or choose auto, blocklist or off).")
    openai = OpenAIModerator(api_key=key, base_url=oa.base_url or None, model=core.moderation_model)
    return CombinedModerator(blocklist, openai)
