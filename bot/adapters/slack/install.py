"""The OAuth install flow's settings and pages (slack-bolt serves the flow itself).

`GET /slack/install` answers an "Add to Slack" page whose link carries a signed `state` (kept
in the database, and in a cookie of the installer's browser); `GET /slack/oauth_redirect`
checks both, exchanges the code with `oauth.v2.access`, stores the installation (workspaces.py)
and answers with a page that says what to type first.
"""
from __future__ import annotations

import html
import logging

from slack_bolt.oauth.async_callback_options import AsyncCallbackOptions, AsyncFailureArgs, AsyncSuccessArgs
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.response import BoltResponse

from bot.adapters.slack.workspaces import InstallationStore, SignedStateStore, Workspaces
from bot.config import SlackSettings
from storage.contract import InstallationRows

log = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
#: The bot scopes of manifest.yaml (the install asks for exactly what the manifest declares).
BOT_SCOPES = ("commands", "chat:write", "files:write", "files:read", "channels:history", "groups:history", "reactions:read", "users:read")

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em}}code{{background:#eee;padding:.1em .3em}}</style>
</head><body><h1>{title}</h1>{body}</body></html>"""

_REASONS = {
    "access_denied": "The install was cancelled in Slack. Nothing was installed.",
    "invalid_browser": "This link was opened in another browser than the one that started the install. Start again from the install page.",
    "invalid_state": "This install link was used already or is too old. Start again from the install page.",
    "missing_code": "Slack sent no authorization code. Start again from the install page.",
    "invalid_code": "Slack did not accept the authorization code (used already or expired). Start again from the install page.",
    "storage_error": "The installation could not be saved. Try again in a moment; the bot's log says why.",
}


def authorization_url(api_url: str | None) -> str | None:
    """Slack's authorize page next to its Web API (https://slack.com/api/ → https://slack.com/oauth/v2/authorize),
    so SLACK_API_URL (GovSlack, a proxy, the tests' emulator) moves both."""
    if not api_url:
        return None
    base = api_url.rstrip("/")
    base = base[: -len("/api")] if base.endswith("/api") else base
    return f"{base}/oauth/v2/authorize"


def oauth_settings(settings: SlackSettings, workspaces: Workspaces, rows: InstallationRows) -> AsyncOAuthSettings:
    assert settings.client_secret is not None and settings.state_secret is not None
    state_store = SignedStateStore(rows, settings.state_secret.get_secret_value())
    oauth = AsyncOAuthSettings(
        client_id=settings.client_id, client_secret=settings.client_secret.get_secret_value(), scopes=list(BOT_SCOPES),
        user_scopes=[], redirect_uri=settings.redirect_uri, install_path=INSTALL_PATH, redirect_uri_path=REDIRECT_PATH,
        authorization_url=authorization_url(settings.api_url), installation_store=InstallationStore(workspaces),
        installation_store_bot_only=True, state_store=state_store, state_expiration_seconds=int(state_store.expiration_seconds),
        logger=log,
    )  # fmt: skip
    oauth.callback_options = AsyncCallbackOptions(success=_success(oauth), failure=_failure(oauth))
    return oauth


def _success(oauth: AsyncOAuthSettings):  # type: ignore[no-untyped-def]
    async def success(args: AsyncSuccessArgs) -> BoltResponse:
        installation = args.installation
        where = html.escape(installation.team_name or installation.enterprise_name or "your workspace")
        body = (
            f"<p>videobot is installed in <b>{where}</b>.</p>"
            "<p>In Slack, invite it to a channel with <code>/invite @videobot</code>, then type "
            "<code>/video a paper boat drifting down a rainy street</code>. <code>/video help</code> lists the rest.</p>"
        )
        headers = {"Content-Type": "text/html; charset=utf-8", "Set-Cookie": [oauth.state_utils.build_set_cookie_for_deletion()]}
        return BoltResponse(status=200, body=_PAGE.format(title="videobot is installed", body=body), headers=headers)

    return success


def _failure(oauth: AsyncOAuthSettings):  # type: ignore[no-untyped-def]
    async def failure(args: AsyncFailureArgs) -> BoltResponse:
        reason = _REASONS.get(args.reason, f"The install did not complete ({html.escape(args.reason)}). Start again from the install page.")
        log.warning("Slack install refused: %s", args.reason)
        body = f'<p>{html.escape(reason)}</p><p><a href="{INSTALL_PATH}">Install page</a></p>'
        headers = {"Content-Type": "text/html; charset=utf-8", "Set-Cookie": [oauth.state_utils.build_set_cookie_for_deletion()]}
        return BoltResponse(status=args.suggested_status_code, body=_PAGE.format(title="videobot was not installed", body=body), headers=headers)

    return failure
