"""`/video settings` in Slack: a workspace admin edits the workspace's settings in a modal
(every key, prefilled with what applies here; only changed fields are saved, through the core);
everyone else reads the core's text view."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.adapters.slack.settings_modal import SETTINGS_MODAL
from bot.core.models import Origin
from bot.core.tenant_settings import KEYS
from tests.fakes.slack_api import TEAM_ID, SlackBot, SlackEmulator, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    slack_env(monkeypatch, slack, VIDEOBOT_CONFIRM_ABOVE_USD="2.5")
    slack.users["U0WSADMIN"] = {"is_admin": True}  # a workspace admin, per users.info
    running = await start_slack_bot()
    try:
        yield running
    finally:
        await running.close()


def field(view: dict[str, Any], name: str) -> dict[str, Any]:
    return next(b for b in view["blocks"] if b.get("block_id") == name)


def here(slack: SlackEmulator, user: str = "U0WSADMIN") -> Origin:
    return Origin(platform="slack", workspace_id=TEAM_ID, channel_id=slack.channel_id, user_id=user)


async def test_an_admin_edits_the_workspace_settings_in_a_modal(bot: SlackBot, slack: SlackEmulator) -> None:
    await bot.app.service.tenant_settings.store.put_setting("slack", TEAM_ID, "tenant", "", "pipelines", ["openai", "scripted"], by="x")
    await slack.slash(bot.url, "/video", "settings", user_id="U0WSADMIN")
    view = (await slack.wait_for(lambda: slack.views))[0]
    assert view["callback_id"] == SETTINGS_MODAL
    assert [b["block_id"] for b in view["blocks"] if b["type"] == "input"] == list(KEYS)
    assert field(view, "confirm_above_usd")["element"]["initial_value"] == "2.5"  # from the environment
    assert field(view, "pipelines")["element"]["initial_value"] == "openai, scripted"  # the workspace's own
    assert "initial_value" not in field(view, "blocklist")["element"]  # unset: empty

    # A value the core cannot parse stays on its field, the modal open; nothing saved.
    slip = await slack.submit_view(bot.url, view, {"seconds": "four"}, user_id="U0WSADMIN")
    assert slip.status == 200 and json.loads(slip.body)["response_action"] == "errors"
    assert "seconds" in json.loads(slip.body)["errors"]

    # Changed fields are saved for the workspace; untouched ones are not written.
    sent = await slack.submit_view(bot.url, view, {"seconds": "6", "blocklist": "spiders", "pipelines": ""}, user_id="U0WSADMIN")
    assert sent.status == 200
    told = await slack.wait_for(lambda: slack.calls_to("chat.postEphemeral"))
    assert told[0].args["user"] == "U0WSADMIN" and "seconds here: 6" in told[0].args["text"]
    effective = await bot.app.service.tenant_settings.effective(here(slack, "U0ALICE"))
    assert effective.get("seconds") == 6 and effective.source("seconds") == "tenant"
    assert effective.get("blocklist") == ["spiders"] and not effective.get("pipelines")
    assert effective.source("confirm_above_usd") == "env", "an untouched field is not saved"


async def test_others_get_the_text_view(bot: SlackBot, slack: SlackEmulator) -> None:
    await slack.slash(bot.url, "/video", "settings", user_id="U0ALICE")
    answer = (await slack.wait_for(lambda: [r for r in slack.responses if r["key"] == "cmd-U0ALICE"]))[0]
    assert "confirm_above_usd: 2.5" in answer["text"] and slack.views == []
