"""`videobot doctor`: is this configuration able to run? One line per check, with what to fix.

The settings parse; which pipelines are configured and which miss what; every key or token
that is set works (one cheap authenticated request per service: OpenAI `GET /v1/models`,
Runway's organization, fal's queue, ComfyUI's queue, Slack `auth.test`, Discord
`GET /users/@me`); the database answers; the media directory takes a file; the gallery has a
secret. Exits 1 when something the configuration needs fails (a key that is set but refused,
a database that does not answer), 0 otherwise; what is not configured is only listed.
No key or token is ever printed: each detail is scrubbed of every secret the settings hold.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from bot.config import Settings

OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "skip"
#: One request per service: a service slower than this is reported as not answering.
TIMEOUT = 10.0


@dataclass
class Result:
    check: str
    status: str
    detail: str
    fix: str = ""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("doctor", help="check the configuration: settings, pipelines, keys and tokens, database, media, gallery")
    # The settings are read here, so one that does not parse is a row of the report, not an exit.
    p.set_defaults(handler=doctor, reads_settings=True)


async def doctor(args: argparse.Namespace, settings: Settings | None) -> int:
    results = await run_checks()
    print(render(results, scrub_values()))
    failed = [r for r in results if r.status == FAIL]
    print(f"\n{len(failed)} problem{'s' if len(failed) != 1 else ''} to fix." if failed else "\nAll needed checks passed.")
    return 1 if failed else 0


async def run_checks() -> list[Result]:
    from bot.core.errors import ConfigError

    settings = Settings()
    try:
        settings.check()
    except ConfigError as exc:
        return [Result("settings", FAIL, exc.message, "fix that variable in .env (see .env.example)")]
    results = [Result("settings", OK, "every section parses")]
    results += pipelines(settings)
    checks: list[Callable[[Settings], Awaitable[Result | None]]] = [
        database, media, gallery, openai_key, runway_key, fal_key, comfyui_server, slack_token, discord_token,
    ]
    for check in checks:
        try:
            result = await asyncio.wait_for(check(settings), TIMEOUT + 5)
        except TimeoutError:
            result = Result(check.__name__, FAIL, f"no answer within {TIMEOUT + 5:g} s", "check the address and the network")
        except Exception as exc:  # a check's own bug must not hide the others
            result = Result(check.__name__, FAIL, f"{type(exc).__name__}: {exc}")
        if result is not None:
            results.append(result)
    return results


def pipelines(settings: Settings) -> list[Result]:
    from bot.pipelines import build_registry

    registry = build_registry(settings)
    configured, missing = [], {}
    for name in registry.names():
        if "+" in name:
            continue  # chains are configured when both their halves are
        pipeline = registry.get(name)
        if pipeline.configured:
            configured.append(name)
        else:
            missing[name] = pipeline.not_configured_reason or "not configured"
    rows = [Result("pipelines", OK, "configured: " + ", ".join(configured))]
    for name, reason in missing.items():
        rows.append(Result(f"pipeline {name}", SKIP, reason))
    default = settings.core.default_pipeline
    if default and default not in configured and not (default in registry and registry.get(default).configured):
        rows.append(Result("default pipeline", FAIL, f"VIDEOBOT_DEFAULT_PIPELINE={default} is not configured",
                           "configure it (see its row) or choose one of the configured pipelines"))  # fmt: skip
    return rows


async def database(settings: Settings) -> Result:
    from storage.open import is_postgres, open_store

    core = settings.core
    kind = "PostgreSQL" if is_postgres(core.database_url) else "SQLite"
    try:
        data = core.data_dir.resolve()
        data.mkdir(parents=True, exist_ok=True)
        store = await asyncio.wait_for(open_store(core.database_url, data_dir=data), TIMEOUT)
        try:
            await store.last_signal_id()
        finally:
            await store.close()
    except Exception as exc:
        return Result("database", FAIL, f"{kind}: {type(exc).__name__}: {exc}", "check VIDEOBOT_DATABASE_URL and that the server runs")
    return Result("database", OK, f"{kind} answers (migrated)")


async def media(settings: Settings) -> Result:
    root = settings.core.media_root
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Result("media directory", FAIL, f"{root}: {exc.strerror or exc}", "make VIDEOBOT_MEDIA_DIR writable by this user")
    return Result("media directory", OK, f"{root} is writable")


async def gallery(settings: Settings) -> Result | None:
    core = settings.core
    if core.web_port is None and core.public_url is None:
        return Result("gallery secret", SKIP, "the gallery is off (VIDEOBOT_WEB_PORT not set)")
    if core.web_secret is not None:
        if len(core.web_secret.get_secret_value()) < 32:
            return Result("gallery secret", WARN, "VIDEOBOT_WEB_SECRET is shorter than 32 characters",
                          "use a long random one: python -c 'import secrets; print(secrets.token_urlsafe(32))'")  # fmt: skip
        return Result("gallery secret", OK, "VIDEOBOT_WEB_SECRET is set")
    if not os.access(core.data_dir.resolve(), os.W_OK):
        return Result("gallery secret", FAIL, "no VIDEOBOT_WEB_SECRET and the data directory is not writable",
                      "set VIDEOBOT_WEB_SECRET (every gallery process needs the same one)")  # fmt: skip
    return Result("gallery secret", WARN, "no VIDEOBOT_WEB_SECRET: a random one is kept in the data directory",
                  "set VIDEOBOT_WEB_SECRET when several processes or machines serve the gallery")  # fmt: skip


async def openai_key(settings: Settings) -> Result | None:
    section = settings.openai
    if section.api_key is None:
        return Result("OpenAI", SKIP, "OPENAI_API_KEY not set")
    from providers.openai_common import make_client

    client = make_client(section.api_key.get_secret_value(), section.base_url, TIMEOUT)
    try:
        page = await client.models.list()
        count = len(page.data)
    except Exception as exc:
        return _refused("OpenAI", exc, "OPENAI_API_KEY")
    finally:
        await client.close()
    return Result("OpenAI", OK, f"key accepted ({count} models listed)")


async def runway_key(settings: Settings) -> Result | None:
    section = settings.runway
    if section.api_secret is None:
        return Result("Runway", SKIP, "RUNWAYML_API_SECRET not set")
    import runwayml

    client = runwayml.AsyncRunwayML(
        api_key=section.api_secret.get_secret_value(), base_url=section.base_url, runway_version=section.api_version,
        max_retries=0, timeout=TIMEOUT,
    )  # fmt: skip
    try:
        org = await client.organization.retrieve()
    except Exception as exc:
        return _refused("Runway", exc, "RUNWAYML_API_SECRET")
    finally:
        await client.close()
    return Result("Runway", OK, f"key accepted ({org.credit_balance} credits)")


async def fal_key(settings: Settings) -> Result | None:
    section = settings.fal
    if section.key is None:
        return Result("fal", SKIP, "FAL_KEY not set")
    # The status of a request that cannot exist: 404 with a good key, 401/403 with a bad one.
    url = f"{section.queue_url}/{section.video_model}/requests/{uuid.uuid4()}/status"
    headers = {"Authorization": f"Key {section.key.get_secret_value()}"}
    return await _http_check("fal", url, headers, "FAL_KEY", good=(200, 400, 404, 422))


async def comfyui_server(settings: Settings) -> Result | None:
    section = settings.comfyui
    if section.url is None:
        return Result("ComfyUI", SKIP, "COMFYUI_URL not set")
    return await _http_check("ComfyUI", f"{section.url.rstrip('/')}/queue", section.headers, "COMFYUI_AUTH_HEADER", good=(200,))


async def slack_token(settings: Settings) -> Result | None:
    section = settings.slack
    if section.bot_token is None:
        return Result("Slack", SKIP, "SLACK_BOT_TOKEN not set")
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    kwargs = {"base_url": section.api_url} if section.api_url else {}
    client = AsyncWebClient(token=section.bot_token.get_secret_value(), timeout=int(TIMEOUT), **kwargs)
    try:
        auth = await client.auth_test()
    except SlackApiError as exc:
        return Result("Slack", FAIL, f"auth.test: {exc.response.get('error')}", "set SLACK_BOT_TOKEN to the app's Bot User OAuth Token (xoxb-...)")
    except Exception as exc:
        return Result("Slack", FAIL, f"auth.test: {type(exc).__name__}: {exc}", "check SLACK_API_URL and the network")
    finally:
        session = getattr(client, "session", None)
        if session is not None:
            await session.close()
    if not section.socket_mode and section.signing_secret is None:
        return Result("Slack", FAIL, f"token works (team {auth.get('team')}), but HTTP mode has no signing secret",
                      "set SLACK_SIGNING_SECRET, or SLACK_APP_TOKEN for Socket Mode")  # fmt: skip
    return Result("Slack", OK, f"token works: bot {auth.get('user')} in {auth.get('team')}")


async def discord_token(settings: Settings) -> Result | None:
    section = settings.discord
    if section.token is None:
        return Result("Discord", SKIP, "DISCORD_TOKEN not set")
    from bot.adapters.discord_bot.endpoints import DISCORD_API

    base = (section.api_base_url or DISCORD_API).rstrip("/")
    headers = {"Authorization": f"Bot {section.token.get_secret_value()}", "User-Agent": "DiscordBot (videobot doctor, 1)"}
    return await _http_check("Discord", f"{base}/users/@me", headers, "DISCORD_TOKEN", good=(200,))


async def _http_check(name: str, url: str, headers: dict[str, str], variable: str, *, good: tuple[int, ...]) -> Result:
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return Result(name, FAIL, f"no answer: {type(exc).__name__}", f"check the address ({name}'s URL setting) and the network")
    if response.status_code in (401, 403):
        return Result(name, FAIL, f"refused the credentials (HTTP {response.status_code})", f"check {variable}")
    if response.status_code not in good:
        return Result(name, FAIL, f"unexpected answer (HTTP {response.status_code})", f"check {name}'s URL setting")
    return Result(name, OK, f"credentials accepted (HTTP {response.status_code})")


def _refused(name: str, exc: Exception, variable: str) -> Result:
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        return Result(name, FAIL, f"refused the key (HTTP {status})", f"check {variable}")
    if status is not None:
        return Result(name, FAIL, f"unexpected answer (HTTP {status})", f"check {name}'s base URL setting")
    return Result(name, FAIL, f"no answer: {type(exc).__name__}", f"check {name}'s base URL setting and the network")


def scrub_values() -> list[str]:
    """Every secret the settings hold (to be cut out of anything printed)."""
    settings = Settings()
    values: list[str] = []
    for section in ("core", "openai", "runway", "flux", "fal", "slack", "discord", "comfyui"):
        try:
            model = getattr(settings, section)
        except Exception:
            continue
        for value in model.__dict__.values():
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
    url = os.environ.get("VIDEOBOT_DATABASE_URL", "")
    if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        values.append(url.split("@", 1)[0].split("//", 1)[-1].split(":", 1)[1])  # the password in the URL
    return values


def render(results: list[Result], secrets: list[str]) -> str:
    width = max(len(r.check) for r in results)
    lines = [f"{'CHECK'.ljust(width)}  RESULT  DETAIL"]
    for r in results:
        line = f"{r.check.ljust(width)}  {r.status.ljust(6)}  {r.detail}"
        if r.fix:
            line += f"\n{' ' * width}          -> {r.fix}"
        lines.append(line)
    text = "\n".join(lines)
    for value in sorted(secrets, key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(asyncio.run(doctor(argparse.Namespace(), None)))
