"""Slack settings the adapter needs beyond `bot.config.SlackSettings`.

SHIM (issue 10): these belong in `bot.config.SlackSettings` (and `.env.example`); until the
lead moves them there they are read here from the same `SLACK_` environment. `limits()`
prefers values on SlackSettings when they exist, so moving them changes nothing else.
"""
from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MB = 1_048_576


class SlackLimits(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLACK_", env_file=".env", extra="ignore", case_sensitive=False)

    #: chat.update calls per window for one workspace (Slack's Tier 3: about 50 a minute for the whole app).
    update_budget: int = Field(default=50, ge=1, le=10_000)
    #: The window of that budget, in seconds.
    update_window_seconds: float = Field(default=60.0, gt=0, le=3600)
    #: The largest file the bot uploads (Slack's limit is 1 GB); larger results are re-encoded to fit, else a still.
    file_limit_mb: float = Field(default=1024.0, gt=0, le=1024)

    @property
    def file_limit_bytes(self) -> int:
        return int(self.file_limit_mb * MB)


def limits(settings: BaseModel) -> SlackLimits:
    """The limits from SlackSettings where it has them, else from the environment."""
    present = {name: getattr(settings, name) for name in SlackLimits.model_fields if hasattr(settings, name)}
    return SlackLimits(**present)
