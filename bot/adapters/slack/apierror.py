"""Slack's error code from a failed Web API call, whatever the body was."""
from __future__ import annotations

from slack_sdk.errors import SlackApiError


def slack_error(exc: SlackApiError) -> str:
    data = exc.response.data
    if isinstance(data, dict):
        return str(data.get("error") or "unknown_error")
    return f"http_{exc.response.status_code}"  # a proxy's or gateway's page, not Slack's JSON
