"""Typed settings from the environment and `.env`, one section per integration.

Every setting is documented in `.env.example`. An invalid value stops start-up
with one line naming the variable (see `load_settings`).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from providers.errors import ConfigError
from bot.core.routing import Split, parse_fallbacks, parse_splits
from providers.pricing import (
    KLING_PRICES,
    FLUX_USD_PER_MEGAPIXEL,
    RUNWAY_CREDIT_USD,
    RUNWAY_CREDITS_PER_SECOND,
    RUNWAY_UNKNOWN_CREDITS_PER_SECOND,
)

if TYPE_CHECKING:
    from providers.fal_endpoints import EndpointTable
    from providers.replicate_models import Catalogue

T = TypeVar("T")


def _section(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore", case_sensitive=False)


# --- checks shared by the sections ------------------------------------------------------------
# Written once as annotated types, so every section says the same thing about the same mistake.


def _blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


#: `OrNone[X]`: an X, or None when unset. A blank value (`SLACK_APP_TOKEN=` copied from
#: .env.example) means "not set", not an empty token, path or number.
OrNone = Annotated[T | None, BeforeValidator(_blank_is_none)]


def http_url(example: str | None = None) -> AfterValidator:
    """A base URL, kept without its trailing slash; None (unset) passes. The error shows
    `example` so the fix is plain at start-up."""
    message = "must be an http:// or https:// URL" + (f", e.g. {example}" if example else "")

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(message)
        return value.rstrip("/")

    return AfterValidator(check)


def _no_negative_prices(value: dict[str, float]) -> dict[str, float]:
    if any(price < 0 for price in value.values()):
        raise ValueError("prices must not be negative")
    return value


#: A price table by model id (USD; the unit is the section's).
Prices = Annotated[dict[str, float], AfterValidator(_no_negative_prices)]


def loaded_by(load: Callable[[Path], object]) -> AfterValidator:
    """A data file (fal's endpoint table, Replicate's model catalogue) read once at start-up:
    a bad row stops start-up with the file and the row named, not a job later."""

    def check(value: Path | None) -> Path | None:
        if value is not None:
            load(value)
        return value

    return AfterValidator(check)


def _fal_table(path: Path | None = None) -> EndpointTable:
    from providers.fal_endpoints import load_table

    return load_table(path)


def _replicate_catalogue(path: Path | None = None) -> Catalogue:
    from providers.replicate_models import load_catalogue

    return load_catalogue(path)


# The remote providers' common knobs, with one set of bounds. Types, not a base class: the
# defaults differ by provider, and a base class would move these fields first in every section
# (the order they are validated, and so which bad variable start-up names first).
PollSeconds = Annotated[float, Field(ge=0, le=300)]
RequestTimeout = Annotated[float, Field(gt=0, le=600)]
RetryBackoff = Annotated[float, Field(ge=0, le=60)]
AbsenceGrace = Annotated[float, Field(ge=0, le=600)]


class CoreSettings(BaseSettings):
    model_config = _section("VIDEOBOT_")

    data_dir: Path = Path("./data")
    #: Where jobs are stored. Empty or `sqlite:///path`: SQLite (the default, under data_dir);
    #: `postgresql://user:pass@host/db`: PostgreSQL, shared by several processes and machines.
    database_url: str = ""
    #: Empty: the best configured pipeline (`videobot pipelines` marks it).
    default_pipeline: str = ""
    default_image_pipeline: str = ""
    max_concurrent_jobs: int = Field(default=4, ge=1, le=1000)
    max_running_per_user: int = Field(default=2, ge=1, le=100)
    max_queued_per_user: int = Field(default=20, ge=1, le=10_000)
    max_prompt_chars: int = Field(default=1000, ge=10, le=32_000)
    max_image_mb: float = Field(default=20, gt=0, le=200)
    #: Largest input image in pixels (width × height), read from its header before it is decoded.
    max_image_pixels: int = Field(default=40_000_000, ge=1_000_000, le=500_000_000)
    #: Stories (`videobot story`, `/story`): total seconds and scenes at most.
    story_max_seconds: int = Field(default=60, ge=1, le=3600)
    story_max_scenes: int = Field(default=12, ge=2, le=50)
    #: Takes (`--takes N`): versions of one prompt made at once, at most (the tenant's `takes` is the default).
    max_takes: int = Field(default=4, ge=1, le=4)
    #: Overall limit for one remote job, in minutes.
    job_timeout_minutes: float = Field(default=20, gt=0, le=24 * 60)
    #: How long a runner owns a job without renewing; a crashed runner's jobs are taken over after it.
    lease_seconds: float = Field(default=60, ge=1, le=3600)
    #: Remove media files of jobs finished this many days ago (rows stay, marked expired); empty: keep forever.
    retention_days: OrNone[float] = Field(default=None, gt=0)
    log_level: str = Field(default="INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    #: Comma-separated user ids (any platform) allowed to delete others' jobs.
    admin_user_ids: str = ""
    #: `PIPELINE:NEXT,NEXT;...`: where a job goes when its pipeline is unavailable (outage after
    #: retries, missing key, retired model), in order. Never on a content-policy refusal or bad input.
    fallbacks: str = ""
    #: `NAME:PIPELINE=WEIGHT,PIPELINE=WEIGHT;...`: NAME is usable as a pipeline; each job picks one arm.
    ab_splits: str = ""
    #: Spending limits in USD per UTC day, per user and per workspace (Slack team / Discord guild); empty: none.
    #: `MODEL=USD,...`: prices for models a provider has no price for: USD per second of video,
    #: or per image for image models. A model with no price at all is refused (budgets could not hold).
    prices: str = ""
    #: Comma-separated models (or pipelines) the operator runs at no cost, e.g. a self-hosted one.
    free_models: str = ""
    #: Jobs estimated above this (USD) wait for their owner's Confirm before anything is queued or
    #: reserved (chat and console; the CLI is the operator's and never asks). Empty: never ask.
    confirm_above_usd: OrNone[float] = Field(default=1.0, ge=0)
    #: Seconds a paid command must wait after the same user's previous one; 0: no cooldown.
    cooldown_seconds: float = Field(default=0, ge=0)
    #: Prompt and image checks before anything is spent: auto (OpenAI's moderation endpoint when
    #: an OpenAI key is set, else the blocklist), openai, blocklist, or off.
    moderation: str = Field(default="auto", pattern=r"(?i)^(auto|openai|blocklist|off)$")
    #: When the moderation service is down: closed (refuse), open (go on), or auto (closed for
    #: paid jobs, open for free ones such as the local renderer).
    moderation_on_outage: str = Field(default="auto", pattern=r"(?i)^(auto|closed|open)$")
    #: Comma-separated words or phrases refused in every moderation mode.
    blocklist: str = ""
    moderation_model: str = "omni-moderation-latest"
    daily_budget_user_usd: OrNone[float] = Field(default=None, ge=0)
    daily_budget_workspace_usd: OrNone[float] = Field(default=None, ge=0)
    #: The operator's ceilings on what tenants may allow (empty: no ceiling). Tenant, channel and
    #: user settings can only tighten them: the longest clip, the largest size (by pixel count),
    #: and comma-separated pipelines and models allowed at all.
    max_seconds: OrNone[int] = Field(default=None, ge=1, le=3600)
    max_size: OrNone[str] = None
    allowed_pipelines: str = ""
    allowed_models: str = ""
    #: Story premises sent to the paid planner model, per user per hour (the plan preview included).
    planner_calls_per_hour: int = Field(default=20, ge=1, le=10_000)
    #: What `videobot run` does: all (one process: chat connections and jobs), gateway (chat
    #: connections only: answers commands, stores jobs queued, renders progress), or worker
    #: (runs queued jobs and posts results with the bot tokens; no chat connection).
    role: str = Field(default="all", pattern=r"(?i)^(all|gateway|worker)$")
    #: Where media files live; every gateway and worker must see the same directory (a shared
    #: volume). Jobs record paths relative to it. Empty: <data dir>/media.
    media_dir: OrNone[Path] = None
    #: Seconds between a process's heartbeats in the store (`videobot status`).
    heartbeat_seconds: float = Field(default=5.0, gt=0, le=300)
    #: A worker looks for queued jobs at least this often (besides when told a job was queued).
    claim_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    #: Jobs one worker process runs at once (its machine's share); empty: up to
    #: VIDEOBOT_MAX_CONCURRENT_JOBS, the cap across all workers, which the store enforces.
    worker_slots: OrNone[int] = Field(default=None, ge=1, le=1000)
    #: The web gallery (`videobot web`, or inside `videobot run` when web_port is set).
    web_port: OrNone[int] = Field(default=None, ge=0, le=65535)
    web_host: str = "127.0.0.1"
    #: Signs personal gallery links and session cookies; empty: a random one kept in the data dir.
    web_secret: OrNone[SecretStr] = None
    #: Encrypts tokens kept in the database (Slack workspaces' installations); empty: a random one
    #: kept in the data dir (0600). Every process on one database needs the same key.
    secret_key: OrNone[SecretStr] = None
    #: Where people reach the gallery (https://videos.example.org); links and "Open in gallery" use it.
    public_url: Annotated[OrNone[str], http_url("https://videos.example.org")] = None
    #: How long a personal link from /gallery may be opened, and how long its browser session lasts.
    web_link_minutes: float = Field(default=60, gt=0, le=7 * 24 * 60)
    web_session_hours: float = Field(default=12, gt=0, le=24 * 90)
    #: Prometheus /metrics, /healthz and /readyz on this port (0: a free one, printed at start);
    #: also on the web port when the gallery runs. Neither set: off.
    metrics_port: OrNone[int] = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    #: json (one JSON object per line) or text; empty: text on a terminal, JSON otherwise.
    log_format: str = Field(default="", pattern=r"(?i)^(json|text|)$")

    @field_validator("max_size")
    @classmethod
    def _check_max_size(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"\d{2,5}x\d{2,5}", value.strip().lower()):
            raise ValueError("must be WIDTHxHEIGHT, e.g. 1280x720")
        return value.strip().lower()

    @field_validator("fallbacks")
    @classmethod
    def _check_fallbacks(cls, value: str) -> str:
        parse_fallbacks(value)
        return value

    @field_validator("ab_splits")
    @classmethod
    def _check_splits(cls, value: str) -> str:
        parse_splits(value)
        return value

    @field_validator("prices")
    @classmethod
    def _check_prices(cls, value: str) -> str:
        parse_prices(value)
        return value

    @property
    def metrics_on(self) -> bool:
        return self.metrics_port is not None or self.web_port is not None

    @property
    def media_root(self) -> Path:
        """The media directory, absolute (VIDEOBOT_MEDIA_DIR, else <data dir>/media)."""
        return (self.media_dir or self.data_dir / "media").resolve()

    @property
    def price_map(self) -> dict[str, float]:
        return parse_prices(self.prices)

    @property
    def free_set(self) -> frozenset[str]:
        return frozenset(m.strip() for m in self.free_models.split(",") if m.strip())

    @property
    def allowed_pipeline_list(self) -> list[str]:
        return [n.strip() for n in self.allowed_pipelines.split(",") if n.strip()]

    @property
    def allowed_model_list(self) -> list[str]:
        return [n.strip() for n in self.allowed_models.split(",") if n.strip()]

    @property
    def fallback_map(self) -> dict[str, tuple[str, ...]]:
        return parse_fallbacks(self.fallbacks)

    @property
    def split_map(self) -> dict[str, Split]:
        return parse_splits(self.ab_splits)


class LocalProviderSettings(BaseSettings):
    model_config = _section("VIDEOBOT_LOCAL_")

    max_seconds: int = Field(default=20, ge=1, le=120)
    fps: int = Field(default=24, ge=1, le=60)
    #: Renders at once; more queue "at the provider".
    concurrency: int = Field(default=1, ge=1, le=16)


class OpenAISettings(BaseSettings):
    model_config = _section("OPENAI_")

    api_key: SecretStr | None = None
    base_url: str | None = None
    video_api_key: SecretStr | None = None
    video_base_url: str | None = None
    video_model: str = "sora-2"
    image_model: str = "gpt-image-2"
    #: Plans a story's scenes from a premise (structured JSON output).
    text_model: str = "gpt-5-mini"
    #: Per HTTP request (a download's limit is per chunk read, not for the whole file).
    request_timeout_seconds: RequestTimeout = 60
    #: USD per second of video, by model id; a model not listed has no estimate.
    video_prices: dict[str, float] = Field(
        default_factory=lambda: {"sora-2": 0.10, "sora-2-pro": 0.30}
    )
    #: low | medium | high | auto.
    image_quality: str = Field(default="auto", pattern=r"^(low|medium|high|auto)$")
    #: USD per million tokens by model id: {"text": input text, "image": input image, "output": output image}.
    image_token_prices: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            "gpt-image-2": {"text": 5.0, "image": 8.0, "output": 30.0},
            "gpt-image-1-mini": {"text": 2.0, "image": 2.5, "output": 8.0},
        }
    )
    #: Image model ids the API no longer serves: refused before anything is sent.
    image_retired_models: str = "dall-e-2,dall-e-3,gpt-image-1"


class RunwaySettings(BaseSettings):
    model_config = _section("RUNWAYML_")

    api_secret: SecretStr | None = None
    base_url: str | None = None
    #: Sent as X-Runway-Version.
    api_version: str = "2024-11-06"
    #: Text-to-video model; image-to-video (and remix/extend, and the chained pipelines) use image_model.
    text_model: str = "gen4.5"
    image_model: str = "gen4_turbo"
    #: Credits per second of video by model id (1 credit = credit_usd).
    credits_per_second: dict[str, float] = Field(default_factory=lambda: dict(RUNWAY_CREDITS_PER_SECOND))
    #: For a model id not in credits_per_second (estimates and budgets).
    unknown_credits_per_second: float = Field(default=RUNWAY_UNKNOWN_CREDITS_PER_SECOND, ge=0)
    credit_usd: float = Field(default=RUNWAY_CREDIT_USD, ge=0)
    #: The first frame goes inline as a data URI up to this size (Runway's cap is 5 MB), else as an upload.
    max_data_uri_mb: float = Field(default=5, gt=0, le=5)
    #: Model ids Runway no longer serves: refused (or fallen back from) before anything is sent.
    retired_models: str = "gen3a_turbo"
    #: Seconds between task reads (Runway asks for at least 5).
    poll_seconds: PollSeconds = 5
    request_timeout_seconds: RequestTimeout = 60
    #: First backoff step when Runway refuses a create with 429/503 or an upload fails.
    retry_backoff_seconds: RetryBackoff = 1.0


class FluxSettings(BaseSettings):
    model_config = _section("BFL_")

    api_key: SecretStr | None = None
    base_url: str = "https://api.bfl.ai"
    #: flux-2-pro, flux-2-max or flux-2-flex (the endpoint is /v1/{model}).
    model: str = "flux-2-pro"
    #: USD per started megapixel of output, by model id.
    prices: dict[str, float] = Field(default_factory=lambda: dict(FLUX_USD_PER_MEGAPIXEL))
    #: Seconds between reads of the polling URL.
    poll_seconds: float = Field(default=0.5, ge=0, le=60)
    #: Overall limit for one image, in seconds.
    timeout_seconds: float = Field(default=300, gt=0, le=3600)
    request_timeout_seconds: RequestTimeout = 60
    retry_backoff_seconds: RetryBackoff = 1.0


class SlackSettings(BaseSettings):
    model_config = _section("SLACK_")

    bot_token: OrNone[SecretStr] = None
    app_token: OrNone[SecretStr] = None
    signing_secret: OrNone[SecretStr] = None
    #: Web API base URL (GovSlack, a proxy, tests); empty: https://slack.com/api/.
    api_url: OrNone[str] = None
    #: HTTP mode (no SLACK_APP_TOKEN): where Slack's requests arrive, at /slack/events; with the OAuth
    #: install (either mode) also /slack/install and /slack/oauth_redirect.
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=3000, ge=0, le=65535)
    #: chat.update calls per window for one workspace, shared by every status message
    #: (Slack's Tier 3: about 50 a minute for the whole app).
    update_budget: int = Field(default=50, ge=1, le=10_000)
    #: The window of that budget, in seconds.
    update_window_seconds: float = Field(default=60.0, gt=0, le=3600)
    #: The largest file the bot uploads (Slack's limit is 1 GB); larger results are re-encoded to fit, else a still.
    file_limit_mb: float = Field(default=1024.0, gt=0, le=1024)
    #: Post the file in the status message's thread (true) or in the channel (false).
    upload_in_thread: bool = True
    #: How many times one Web API call is retried after a 429 (each waits Retry-After).
    rate_limit_retries: int = Field(default=5, ge=0, le=50)
    #: A distributed app (no SLACK_BOT_TOKEN): the OAuth install flow serves any number of workspaces.
    client_id: OrNone[str] = None
    client_secret: OrNone[SecretStr] = None
    #: Signs the OAuth `state` handed to each installer (with the one kept in the database).
    state_secret: OrNone[SecretStr] = None
    #: The Redirect URL set in the app's OAuth settings (https://HOST/slack/oauth_redirect); empty: Slack's setting.
    redirect_uri: OrNone[str] = None
    #: A rotating token this close to its expiry is refreshed before use.
    token_refresh_margin_seconds: float = Field(default=600, ge=0, le=43_200)

    @property
    def configured(self) -> bool:
        return self.bot_token is not None or self.oauth

    @property
    def oauth(self) -> bool:
        """Many workspaces through the OAuth install (the single-token mode wins when SLACK_BOT_TOKEN is set)."""
        return self.bot_token is None and None not in (self.client_id, self.client_secret, self.state_secret)

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None

    @property
    def file_limit_bytes(self) -> int:
        return int(self.file_limit_mb * 1_048_576)


class DiscordSettings(BaseSettings):
    model_config = _section("DISCORD_")

    token: SecretStr | None = None
    guild_ids: str = ""
    api_base_url: str | None = None
    gateway_url: str | None = None
    #: Status-message edits per window, per channel (bot-token edits) and per interaction
    #: webhook (token edits), shared by every message there; Discord allows about 5 per 5 s.
    #: The final state of every job is always sent; a 429 slows the budget down further.
    status_edits_per_window: int = Field(default=5, ge=1, le=50)
    #: The window of that budget, in seconds.
    status_edit_window_seconds: float = Field(default=5.0, gt=0, le=300)
    #: Switch from the 15-minute interaction token to the bot token this many seconds before it expires.
    token_margin_seconds: float = Field(default=120, ge=0, le=900)
    #: Seconds to wait for guilds after READY (tests set it low).
    guild_ready_timeout: float = Field(default=2.0, ge=0, le=60)
    #: Register the slash commands at start-up (globally and in DISCORD_GUILD_IDS).
    sync_commands: bool = True
    #: Sharding (large bots): the total number of shards, and the ones this gateway runs
    #: ("0,1"; empty: all of them). Either set: discord.py's AutoShardedClient.
    shard_count: OrNone[int] = Field(default=None, ge=1, le=100_000)
    shard_ids: str = ""

    @field_validator("shard_ids")
    @classmethod
    def _check_shard_ids(cls, value: str) -> str:
        for part in value.replace(" ", "").split(","):
            if part and not part.isdigit():
                raise ValueError(f"shard ids are numbers separated by commas, not {value!r}")
        return value

    @model_validator(mode="after")
    def _shards_in_range(self) -> DiscordSettings:
        ids = self.shard_id_list
        if ids is not None:
            if self.shard_count is None:
                raise ValueError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the total across every gateway)")
            if any(i >= self.shard_count for i in ids):
                raise ValueError(f"shard ids run 0..{self.shard_count - 1} with DISCORD_SHARD_COUNT={self.shard_count}")
        return self

    @property
    def shard_id_list(self) -> list[int] | None:
        ids = [int(s) for s in self.shard_ids.replace(" ", "").split(",") if s]
        return ids or None

    @property
    def sharded(self) -> bool:
        return self.shard_count is not None or self.shard_id_list is not None

    @property
    def configured(self) -> bool:
        return self.token is not None

    @property
    def guild_id_list(self) -> list[int]:
        return [int(g) for g in self.guild_ids.replace(" ", "").split(",") if g]


class FalSettings(BaseSettings):
    """fal's queue API (pipelines `fal`, `gpt-image+fal`, `flux+fal`)."""

    # `FAL_PRICES=` copied from .env.example means "the table's prices", not an empty JSON value.
    model_config = SettingsConfigDict(**_section("FAL_"), env_ignore_empty=True)

    key: OrNone[SecretStr] = None
    #: Any base that speaks fal's queue protocol (a gateway, or plain HTTP on loopback).
    queue_url: Annotated[str, http_url("https://queue.fal.run")] = "https://queue.fal.run"
    #: Text-to-video endpoint id; image-to-video (and the chained pipelines) use i2v_model.
    video_model: str = "fal-ai/kling-video/v2.5-turbo/pro/text-to-video"
    i2v_model: str = "fal-ai/kling-video/v2.5-turbo/pro/image-to-video"
    #: USD per second by endpoint id (`ID@720p`, `ID+audio` for one resolution or with sound),
    #: over the endpoint table's own prices.
    prices: Prices = Field(default_factory=lambda: dict(_fal_table().prices))
    #: A copy of providers/fal_endpoints.json with more endpoint families; empty: the shipped table.
    endpoints_file: Annotated[OrNone[Path], loaded_by(_fal_table)] = None
    #: Sent as the negative prompt to the endpoints that take one; empty: none.
    negative_prompt: str = ""
    #: Seconds between status reads.
    poll_seconds: PollSeconds = 2.0
    request_timeout_seconds: RequestTimeout = 60
    #: First backoff step when fal refuses a submit with 503.
    retry_backoff_seconds: RetryBackoff = 1.0


class KlingSettings(BaseSettings):
    """Kling's own API (pipelines `kling`, `gpt-image+kling`, `flux+kling`, ...)."""

    model_config = SettingsConfigDict(**_section("KLING_"), env_ignore_empty=True)

    access_key: OrNone[SecretStr] = None
    secret_key: OrNone[SecretStr] = None
    #: api-singapore.klingai.com serves the global API; any base that speaks it (a gateway, loopback).
    base_url: Annotated[str, http_url("https://api-singapore.klingai.com")] = "https://api-singapore.klingai.com"
    #: model_name for text and image to video (kling-v2-5-turbo, kling-v2-1, kling-v1-6, ...).
    model: str = "kling-v2-5-turbo"
    #: std (720p) or pro (1080p, and end frames on most models).
    mode: Literal["std", "pro"] = "std"
    #: USD per second of output by `model@mode` (a model alone prices both modes).
    prices: Prices = Field(default_factory=lambda: dict(KLING_PRICES))
    #: Sent as negative_prompt; empty: none.
    negative_prompt: str = ""
    #: Kling's cfg_scale (0..1, how closely the prompt is followed); empty: Kling's default.
    cfg_scale: float | None = Field(default=None, ge=0, le=1)
    #: Seconds between task reads.
    poll_seconds: PollSeconds = 5.0
    #: After a crash mid-create: how long a create may still be on its way before a miss counts.
    absence_grace_seconds: AbsenceGrace = 15.0
    request_timeout_seconds: RequestTimeout = 60
    #: First backoff step when Kling refuses a create (503, an expired token).
    retry_backoff_seconds: RetryBackoff = 1.0


class ReplicateSettings(BaseSettings):
    """Replicate's predictions API (pipelines `replicate`, `gpt-image+replicate`, `flux+replicate`, ...)."""

    model_config = SettingsConfigDict(**_section("REPLICATE_"), env_ignore_empty=True)

    api_token: OrNone[SecretStr] = None
    #: Any base that speaks Replicate's HTTP API (a gateway, or plain HTTP on loopback).
    base_url: Annotated[str, http_url("https://api.replicate.com")] = "https://api.replicate.com"
    #: `owner/name` or `owner/name:version`, each with a row in the model catalogue.
    video_model: str = "wan-video/wan-2.5-t2v"
    #: Image to video (and the chained pipelines).
    i2v_model: str = "wan-video/wan-2.5-i2v"
    #: Text to image (`replicate-image`, and the image step of `replicate-image+VIDEO` chains).
    image_model: str = "black-forest-labs/flux-schnell"
    #: A copy of providers/replicate_models.json with more models; empty: the shipped catalogue.
    models_file: Annotated[OrNone[Path], loaded_by(_replicate_catalogue)] = None
    #: Over the catalogue's prices: `owner/name` = USD per second, `owner/name@run` = USD per prediction.
    prices: Prices = Field(default_factory=dict)
    #: Seconds between prediction reads.
    poll_seconds: PollSeconds = 2.0
    #: After a crash mid-create: how long a create may still be on its way before a miss counts.
    absence_grace_seconds: AbsenceGrace = 10.0
    request_timeout_seconds: RequestTimeout = 60
    #: First backoff step when Replicate refuses a create with 503.
    retry_backoff_seconds: RetryBackoff = 1.0

    @model_validator(mode="after")
    def _check_models(self) -> ReplicateSettings:
        catalogue = _replicate_catalogue(self.models_file)
        for setting, model in (("REPLICATE_VIDEO_MODEL", self.video_model), ("REPLICATE_I2V_MODEL", self.i2v_model)):
            if catalogue.row(model) is None:
                raise ValueError(
                    f"{setting}={model} has no row in the Replicate model catalogue {catalogue.path} (its inputs and price "
                    "are not known); add one, or set REPLICATE_MODELS_FILE"
                )
        if catalogue.image_row(self.image_model) is None:
            raise ValueError(
                f"REPLICATE_IMAGE_MODEL={self.image_model} has no row under 'images' in the Replicate model catalogue "
                f"{catalogue.path}; add one, or set REPLICATE_MODELS_FILE"
            )
        return self


#: USD per second of video (`MODEL+audio` with sound), per image for image models; check
#: Google's price pages (ai.google.dev/pricing, cloud.google.com/vertex-ai/generative-ai/pricing).
GOOGLE_PRICES = {
    "gemini-omni-1.2-flash": 0.10, "gemini-omni-1.2-flash+audio": 0.15,
    "gemini-omni-1.1-flash": 0.08, "gemini-omni-1.1-flash+audio": 0.12,
    "veo-3.1-generate-001": 0.20, "veo-3.1-generate-001+audio": 0.40,
    "veo-3.1-fast-generate-001": 0.10, "veo-3.1-fast-generate-001+audio": 0.15,
    "gemini-2.5-flash-image": 0.039, "gemini-3-pro-image": 0.134, "gemini-3.1-flash-lite-image": 0.02,
}  # fmt: skip


class GoogleSettings(BaseSettings):
    """Google through google-genai: `gemini-video` (Gemini Omni, Gemini Developer API key),
    `veo` (Veo 3.1, Vertex AI), `gemini-image` (either). The SDK's own variable names."""

    model_config = SettingsConfigDict(**_section("GOOGLE_"), env_ignore_empty=True)

    #: The Gemini Developer API key (GOOGLE_API_KEY wins when both are set, as in google-genai).
    api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("GOOGLE_API_KEY", "GEMINI_API_KEY"))
    #: Vertex AI (Veo): GOOGLE_GENAI_USE_VERTEXAI=true, GOOGLE_CLOUD_PROJECT, GOOGLE_CLOUD_LOCATION.
    genai_use_vertexai: bool = False
    cloud_project: str | None = None
    cloud_location: str = "us-central1"
    #: A Vertex OAuth access token sent as it is (e.g. `gcloud auth print-access-token`; it expires
    #: within the hour); empty: application default credentials.
    access_token: SecretStr | None = None
    #: Other endpoints (a gateway, a regional host); google-genai reads the same variables.
    gemini_base_url: Annotated[str | None, http_url()] = None
    vertex_base_url: Annotated[str | None, http_url()] = None
    omni_model: str = "gemini-omni-1.2-flash"
    #: Durations (seconds) and sizes the Omni models make.
    omni_seconds: str = "4,6,8"
    omni_sizes: str = "1280x720,720x1280,1920x1080,1080x1920"
    #: uri (the video is downloaded and streamed to disk) or inline (base64 in the interaction).
    omni_delivery: str = Field(default="uri", pattern=r"^(uri|inline)$")
    veo_model: str = "veo-3.1-generate-001"
    veo_seconds: str = "4,6,8"
    #: Seconds one Veo extension adds to a Veo clip; empty: extend from the last frame instead.
    veo_extend_seconds: str = "7"
    veo_sizes: str = "1280x720,720x1280,1920x1080,1080x1920"
    #: Sent to Veo as the negative prompt; empty: none.
    veo_negative_prompt: str = ""
    image_model: str = "gemini-2.5-flash-image"
    prices: Prices = Field(default_factory=lambda: dict(GOOGLE_PRICES))
    omni_poll_seconds: PollSeconds = 5.0
    veo_poll_seconds: PollSeconds = 10.0
    request_timeout_seconds: RequestTimeout = 120
    #: First backoff step when Google refuses a create with 429/503.
    retry_backoff_seconds: RetryBackoff = 1.0

    @field_validator("omni_seconds", "veo_seconds", "veo_extend_seconds")
    @classmethod
    def _check_seconds(cls, value: str) -> str:
        items = [s for s in value.replace(" ", "").split(",") if s]
        if not all(s.isdigit() and 0 < int(s) <= 120 for s in items):
            raise ValueError("must be whole seconds separated by commas, e.g. 4,6,8")
        return value

    @field_validator("omni_sizes", "veo_sizes")
    @classmethod
    def _check_sizes(cls, value: str) -> str:
        from providers.google_common import VIDEO_SHAPES

        items = [s for s in value.replace(" ", "").split(",") if s]
        unknown = [s for s in items if s not in VIDEO_SHAPES]
        if not items or unknown:
            raise ValueError(f"must be sizes from {', '.join(VIDEO_SHAPES)}")
        return value

    @field_validator("prices")
    @classmethod
    def _over_shipped_prices(cls, value: dict[str, float]) -> dict[str, float]:
        # GOOGLE_PRICES adds to the shipped table rather than replacing it (Prices has checked the signs).
        return {**GOOGLE_PRICES, **value}

    @property
    def vertex_reason(self) -> str:
        """Why Veo cannot run; empty when it can."""
        if not self.genai_use_vertexai:
            return (
                "Veo runs on Vertex AI only (google-genai refuses generate_videos with a Gemini API key): "
                "set GOOGLE_GENAI_USE_VERTEXAI=true, GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION"
            )
        if not self.cloud_project:
            return "GOOGLE_CLOUD_PROJECT is not set"
        return ""


class ComfyUISettings(BaseSettings):
    """A self-hosted ComfyUI server (`comfyui`, `comfyui-image`, `comfyui-image+comfyui`)."""

    model_config = _section("COMFYUI_")

    #: e.g. http://127.0.0.1:8188; empty: the ComfyUI pipelines are listed but not configured.
    url: OrNone[str] = None
    #: Where relative workflow names are looked up; empty: the workflows shipped with videobot.
    workflows_dir: OrNone[Path] = None
    #: API-format workflow files (ComfyUI: Export (API)); empty turns that capability off.
    t2v_workflow: str = "wan2.2_ti2v_5b_t2v.json"
    i2v_workflow: str = "wan2.2_ti2v_5b_i2v.json"
    t2i_workflow: str = "flux1_schnell_t2i.json"
    #: `Name: value`, sent with every request and the websocket (a reverse proxy's auth).
    auth_header: OrNone[SecretStr] = None
    #: USD per second of video (0: own hardware), and per image.
    usd_per_second: float = Field(default=0.0, ge=0)
    usd_per_image: float = Field(default=0.0, ge=0)
    #: Replaces the text of the `videobot.negative` node; empty keeps the workflow's own.
    negative_prompt: str = ""
    max_seconds: int = Field(default=10, ge=1, le=120)
    #: Seconds between status reads (from memory while the websocket is up).
    poll_seconds: float = Field(default=1.0, ge=0, le=60)
    #: After a crash mid-create: how long a request may still be in flight before a miss counts.
    absence_grace_seconds: AbsenceGrace = 15.0
    request_timeout_seconds: RequestTimeout = 60
    #: Overall limit for one image (image jobs and the image step).
    image_timeout_seconds: float = Field(default=600, gt=0, le=24 * 3600)

    @field_validator("auth_header")
    @classmethod
    def _check_header(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            name, sep, header = value.get_secret_value().partition(":")
            if not sep or not name.strip() or not header.strip() or " " in name.strip():
                raise ValueError("must be 'Name: value', for example 'Authorization: Bearer TOKEN'")
        return value

    @property
    def headers(self) -> dict[str, str]:
        if self.auth_header is None:
            return {}
        name, _, value = self.auth_header.get_secret_value().partition(":")
        return {name.strip(): value.strip()}


class Settings:
    """All sections, each read from the environment when first used."""

    @cached_property
    def core(self) -> CoreSettings:
        return CoreSettings()

    @cached_property
    def local(self) -> LocalProviderSettings:
        return LocalProviderSettings()

    @cached_property
    def openai(self) -> OpenAISettings:
        return OpenAISettings()

    @cached_property
    def runway(self) -> RunwaySettings:
        return RunwaySettings()

    @cached_property
    def flux(self) -> FluxSettings:
        return FluxSettings()

    @cached_property
    def fal(self) -> FalSettings:
        return FalSettings()

    @cached_property
    def kling(self) -> KlingSettings:
        return KlingSettings()

    @cached_property
    def replicate(self) -> ReplicateSettings:
        return ReplicateSettings()

    @cached_property
    def slack(self) -> SlackSettings:
        return SlackSettings()

    @cached_property
    def discord(self) -> DiscordSettings:
        return DiscordSettings()

    @cached_property
    def comfyui(self) -> ComfyUISettings:
        return ComfyUISettings()

    @cached_property
    def google(self) -> GoogleSettings:
        return GoogleSettings()

    def check(self) -> Settings:
        """Read every section now so a bad value fails at start-up, not mid-job."""
        for name in ("core", "local", "openai", "runway", "flux", "fal", "kling", "replicate", "slack", "discord", "comfyui", "google"):
            try:
                getattr(self, name)
            except ValidationError as exc:
                raise ConfigError(_describe(exc)) from None
        return self


_SECTION_PREFIX = {
    "CoreSettings": "VIDEOBOT_",
    "LocalProviderSettings": "VIDEOBOT_LOCAL_",
    "OpenAISettings": "OPENAI_",
    "RunwaySettings": "RUNWAYML_",
    "FluxSettings": "BFL_",
    "FalSettings": "FAL_",
    "KlingSettings": "KLING_",
    "ReplicateSettings": "REPLICATE_",
    "SlackSettings": "SLACK_",
    "DiscordSettings": "DISCORD_",
    "ComfyUISettings": "COMFYUI_",
    "GoogleSettings": "GOOGLE_",
}


def _describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"])
    var = _SECTION_PREFIX.get(exc.title, "") + field.upper()
    got = err.get("input")
    return f"Invalid setting {var}={got!r}: {err['msg']}."


def load_settings() -> Settings:
    return Settings().check()


def parse_prices(value: str) -> dict[str, float]:
    """`sora-2-pro=0.5, my-model=0.02` -> {'sora-2-pro': 0.5, 'my-model': 0.02}."""
    prices: dict[str, float] = {}
    for item in (p.strip() for p in value.split(",")):
        if not item:
            continue
        model, sep, price = item.partition("=")
        try:
            prices[model.strip()] = float(price)
        except ValueError:
            raise ValueError(f"VIDEOBOT_PRICES: '{item}' is not MODEL=USD, for example sora-2-pro=0.50") from None
        if not sep or not model.strip() or prices[model.strip()] < 0:
            raise ValueError(f"VIDEOBOT_PRICES: '{item}' is not MODEL=USD, for example sora-2-pro=0.50")
    return prices

