"""One deployment, many workspaces: the real slack-bolt app installed through Slack's OAuth v2 flow
(`/slack/install`, the emulator's authorize page, `/slack/oauth_redirect`, `oauth.v2.access`) in two
workspaces of the emulator, each answered, updated and delivered with its own token (the emulator
refuses another workspace's token as Slack does, and records whose token every call carried)."""
from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.core.models import JobStatus
from storage.installations import installations_of
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline
from tests.fakes.slack_api import (  # noqa: F401 (slack is a fixture)
    SlackBot, SlackEmulator, install, slack, slack_oauth_env, start_slack_bot,
)

pytestmark = pytest.mark.timeout(90)

ALPHA, BETA = "T0ALPHA", "T0BETA"
CHANNEL = {ALPHA: "C0ALPHA", BETA: "C0BETA"}
ASK = "a lighthouse in fog --seconds 1 --size 128x72"


@pytest.fixture
def server() -> ScriptedServer:
    return ScriptedServer()


@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    slack_oauth_env(monkeypatch, slack, VIDEOBOT_SECRET_KEY="k" * 40)
    for team, channel in CHANNEL.items():
        slack.add_team(team, channel)
    running = await start_slack_bot(register=lambda app: app.registry.register("scripted", lambda: scripted_pipeline(server)))
    assert running.adapter.install_url is not None
    slack.redirect_uri = running.adapter.install_url.replace("/slack/install", "/slack/oauth_redirect")
    try:
        yield running
    finally:
        await running.close()


async def installed(bot: SlackBot, slack: SlackEmulator, *teams: str) -> None:
    for team in teams:
        page = await install(slack, str(bot.adapter.install_url), team)
        assert page.status == 200 and "videobot is installed" in page.body and "/video" in page.body, page.body


async def job_in(bot: SlackBot, channel: str, words: str = "") -> Any:
    """The job asked in a channel with these words in its prompt (waiting for the store to have it)."""
    for _ in range(1000):
        jobs = [j for j in await bot.app.store.list(platform="slack", limit=50) if j.origin.channel_id == channel and words in j.prompt]
        if jobs:
            return jobs[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no job in {channel} asking for {words!r}")


def channel_of(slack: SlackEmulator, call: Any) -> str | None:
    """The channel a Web API call acted on: named in it, or the file's share."""
    channel = call.args.get("channel") or call.args.get("channel_id")
    if channel:
        return str(channel)
    file = slack.files.get(str(call.args.get("file", "")))
    if file:
        shared = [c for scope in (file.get("shares") or {}).values() for c in scope]
        return shared[0] if shared else None
    return None


async def test_two_workspaces_are_installed_and_each_video_is_answered_updated_and_delivered_with_its_own_token(
    bot: SlackBot, slack: SlackEmulator
) -> None:
    await installed(bot, slack, ALPHA, BETA)
    for team in (ALPHA, BETA):
        sent = await slack.slash(bot.url, "/video", f"{ASK} from {team}", channel_id=CHANNEL[team])
        assert sent.status == 200 and sent.body == ""
    for team in (ALPHA, BETA):
        job = await job_in(bot, CHANNEL[team])
        assert job.origin.workspace_id == team
        done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
        assert done.status is JobStatus.COMPLETED and done.error_code is None, done.error_message
        ts = str(done.origin.status_message_id)
        await slack.wait_for(lambda ts=ts: "✅ Done" in slack.text_of(ts), timeout=10)
        reply = next(m for m in slack.thread(ts) if m.get("files"))
        assert reply["channel"] == CHANNEL[team] and reply["user"] == slack.teams[team].bot_user_id

    # Every call the emulator saw carried a valid token, and each channel's calls its own workspace's.
    refused = [(c.method, c.team) for c in slack.calls if c.method.count(".") and c.team is None and c.method != "oauth.v2.access"]
    assert not refused, refused
    for team in (ALPHA, BETA):
        calls = [c for c in slack.calls if channel_of(slack, c) == CHANNEL[team]]
        assert {c.method for c in calls} >= {"chat.postMessage", "chat.update", "files.completeUploadExternal", "files.info"}
        assert {c.team for c in calls} == {team}, [(c.method, c.team) for c in calls if c.team != team]
        assert all(c.token == slack.bot_token_of(team) for c in calls)
    # As Slack does: one workspace's token does not reach another's channel.
    async with aiohttp.ClientSession() as http:
        async with http.post(slack.api_url + "chat.postMessage", data={"channel": CHANNEL[BETA], "text": "hi"},
                             headers={"Authorization": f"Bearer {slack.bot_token_of(ALPHA)}"}) as answer:  # fmt: skip
            assert (await answer.json())["error"] == "channel_not_found"


async def test_tokens_are_kept_encrypted_and_a_reinstall_replaces_the_installation(bot: SlackBot, slack: SlackEmulator) -> None:
    await installed(bot, slack, ALPHA)
    await installed(bot, slack, ALPHA)  # a reinstall: a new token, one row
    rows = await installations_of(bot.app.store).all("slack")
    assert [r.team_id for r in rows] == [ALPHA]
    token = slack.bot_token_of(ALPHA)
    assert token is not None and token not in rows[0].secret and "xox" not in rows[0].secret
    found = await bot.adapter.workspaces.find(ALPHA, cached=False)
    assert found.bot_token == token and found.bot_user_id == slack.teams[ALPHA].bot_user_id
    assert token not in repr(found)


async def test_a_forged_or_replayed_state_is_refused_and_installs_nothing(bot: SlackBot, slack: SlackEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(str(bot.adapter.install_url)) as page:
            cookie = page.headers["Set-Cookie"].split(";", 1)[0]
            state = urllib.parse.parse_qs(urllib.parse.urlsplit(page.headers.get("Location") or _link(await page.text())).query)["state"][0]
        redirect = str(slack.redirect_uri)
        # Forged: a state this bot never signed, with a cookie to match.
        forged = "x" * 32 + "." + "0" * 32
        async with http.get(f"{redirect}?code=code-x&state={forged}", headers={"Cookie": f"slack-app-oauth-state={forged}"}) as answer:
            assert answer.status == 401 and "used already or is too old" in await answer.text()
        # A real one, used once, then replayed.
        async with http.get(f"{slack.base}/oauth/v2/authorize?client_id=1111.2222&state={state}&team={ALPHA}", allow_redirects=False) as approved:
            back = approved.headers["Location"]
        async with http.get(back, headers={"Cookie": cookie}) as answer:
            assert answer.status == 200
        async with http.get(back, headers={"Cookie": cookie}) as answer:
            assert answer.status == 401 and "used already" in await answer.text()
        # The state from another browser (no cookie): refused before any lookup.
        async with http.get(back) as answer:
            assert answer.status == 400
    assert [g["ok"] for g in slack.grants] == [True]  # only the good one reached oauth.v2.access
    assert [r.team_id for r in await installations_of(bot.app.store).all("slack")] == [ALPHA]


def _link(html: str) -> str:
    import re

    found = re.search(r'href="([^"]+/oauth/v2/authorize[^"]*)"', html)
    assert found is not None, html
    return found.group(1).replace("&amp;", "&")


async def test_uninstalling_one_workspace_cancels_its_jobs_and_leaves_the_others_and_a_reinstall_works(
    bot: SlackBot, slack: SlackEmulator, server: ScriptedServer
) -> None:
    await installed(bot, slack, ALPHA, BETA)
    server.release.clear()  # jobs stay in progress at the provider
    for team in (ALPHA, BETA):
        for n in range(2):
            await slack.slash(bot.url, "/video", f"{ASK} --pipeline scripted take {n}", channel_id=CHANNEL[team])
    await slack.wait_for(lambda: len(server.creates) >= 2 and len(slack.calls_to("chat.postMessage")) >= 4, timeout=20)
    jobs = [j for j in await bot.app.store.list(platform="slack", limit=50)]
    assert len(jobs) == 4

    slack.uninstall(ALPHA)  # Slack revokes the tokens, then tells the app
    sent = await slack.event(bot.url, ALPHA, {"type": "app_uninstalled"})
    assert sent.status == 200
    alpha = [j for j in jobs if j.origin.workspace_id == ALPHA]
    for _ in range(500):
        now = {j.id: j for j in await bot.app.store.list(platform="slack", limit=50)}
        if all(now[j.id].status is JobStatus.CANCELLED for j in alpha):
            break
        await asyncio.sleep(0.02)
    assert all(now[j.id].status is JobStatus.CANCELLED for j in alpha), {j.id: now[j.id].status for j in alpha}
    for job in alpha:
        assert any("uninstalled" in str(e["detail"]) for e in await bot.app.store.events(job.id))
    assert await installations_of(bot.app.store).find("slack", "", ALPHA) is None
    # The other workspace's jobs go on, and end delivered with their own token.
    beta = [j for j in jobs if j.origin.workspace_id == BETA]
    assert all(now[j.id].status is not JobStatus.CANCELLED for j in beta)
    server.release.set()
    for job in beta:
        done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
        assert done.status is JobStatus.COMPLETED and done.error_code is None, done.error_message
    assert server.cancels, "the uninstalled workspace's remote jobs were not cancelled"

    # A reinstall works at once.
    await installed(bot, slack, ALPHA)
    await slack.slash(bot.url, "/video", f"{ASK} again", channel_id=CHANNEL[ALPHA])
    again = await job_in(bot, CHANNEL[ALPHA], "again")
    done = await asyncio.wait_for(bot.app.runner.wait(again.id), 20)
    assert done.status is JobStatus.COMPLETED and done.error_code is None, done.error_message


async def test_an_expiring_token_is_refreshed_before_use_and_the_new_pair_is_stored(
    bot: SlackBot, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack.rotation_seconds = 3600
    await installed(bot, slack, ALPHA)
    first = slack.bot_token_of(ALPHA)
    # An hour left, within a margin of an hour: the next use refreshes it (once, however many ask at
    # once); the new token lives two hours, out of the margin.
    slack.rotation_seconds = 7200
    bot.adapter.workspaces.settings = bot.adapter.workspaces.settings.model_copy(update={"token_refresh_margin_seconds": 3600.0})
    bot.adapter.workspaces._cache.clear()
    bots = await asyncio.gather(*(bot.adapter.workspaces.bot(ALPHA) for _ in range(5)))
    assert [g["grant"] for g in slack.grants] == ["authorization_code", "refresh_token"]
    assert all(g["ok"] for g in slack.grants)
    second = slack.bot_token_of(ALPHA)
    assert second != first and {b.bot_token for b in bots} == {second}
    stored = await installations_of(bot.app.store).find("slack", "", ALPHA)
    assert stored is not None and second not in stored.secret
    fresh = await bot.adapter.workspaces.find(ALPHA, cached=False)
    assert fresh.bot_token == second and fresh.bot_refresh_token in slack.refresh_tokens


async def test_socket_mode_serves_the_install_pages_on_the_http_port_and_each_workspace_with_its_token(
    settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes.slack_api import APP_TOKEN

    slack_oauth_env(monkeypatch, slack, SLACK_APP_TOKEN=APP_TOKEN)
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    slack.add_team(ALPHA, CHANNEL[ALPHA])
    bot = await start_slack_bot()
    try:
        assert bot.adapter.http_url is None and bot.adapter.install_url is not None
        slack.redirect_uri = bot.adapter.install_url.replace("/slack/install", "/slack/oauth_redirect")
        await installed(bot, slack, ALPHA)
        await slack.wait_for(lambda: slack.sockets)
        await slack.socket_send("slash_commands", slack.command_form("/video", ASK, channel_id=CHANNEL[ALPHA]))
        job = await job_in(bot, CHANNEL[ALPHA])
        done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
        assert done.status is JobStatus.COMPLETED and done.error_code is None, done.error_message
        calls = [c for c in slack.calls if channel_of(slack, c) == CHANNEL[ALPHA]]
        assert calls and {c.token for c in calls} == {slack.bot_token_of(ALPHA)}
    finally:
        await bot.close()


async def test_redeliver_posts_again_with_the_jobs_workspace_token(bot: SlackBot, slack: SlackEmulator, server: ScriptedServer) -> None:
    await installed(bot, slack, ALPHA, BETA)
    server.release.clear()
    await slack.slash(bot.url, "/video", f"{ASK} --pipeline scripted", channel_id=CHANNEL[BETA])
    job = await job_in(bot, CHANNEL[BETA])
    await slack.wait_for(lambda: slack.calls_to("chat.postMessage"))
    slack.archived.add(CHANNEL[BETA])  # the post of the result is refused for good
    server.release.set()
    failed = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
    assert failed.error_code == "undelivered", failed
    slack.archived.discard(CHANNEL[BETA])
    await bot.app.service.redeliver(job.id)  # what `videobot redeliver` asks the running bot
    for _ in range(500):
        done = await bot.app.store.get(job.id)
        if done is not None and done.error_code is None and done.origin.result_message_id:
            break
        await asyncio.sleep(0.02)
    assert done is not None and done.origin.result_message_id and done.error_code is None, done
    shares = slack.calls_to("files.completeUploadExternal")
    assert len([c for c in shares if c.args.get("channel_id") == CHANNEL[BETA]]) >= 2
    assert {c.token for c in shares} == {slack.bot_token_of(BETA)}


async def test_no_token_or_client_secret_reaches_the_logs_even_at_debug(
    bot: SlackBot, slack: SlackEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.fakes.slack_api import CLIENT_SECRET

    caplog.set_level(logging.DEBUG)
    slack.rotation_seconds = 3600
    await installed(bot, slack, ALPHA)
    slack.rotation_seconds = 7200
    bot.adapter.workspaces.settings = bot.adapter.workspaces.settings.model_copy(update={"token_refresh_margin_seconds": 3600.0})
    bot.adapter.workspaces._cache.clear()
    await slack.slash(bot.url, "/video", ASK, channel_id=CHANNEL[ALPHA])
    job = await job_in(bot, CHANNEL[ALPHA])
    done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
    assert done.status is JobStatus.COMPLETED and [g["grant"] for g in slack.grants] == ["authorization_code", "refresh_token"]
    assert "oauth.v2.access" in caplog.text  # slack_sdk did log the calls...
    secrets = [t for t in slack.tokens if t.startswith(("xoxb", "xoxe"))] + list(slack.refresh_tokens) + [CLIENT_SECRET]
    leaked = [s for s in secrets if s in caplog.text]
    assert not leaked, leaked  # ...without what they carried


async def test_an_org_wide_install_serves_the_orgs_teams_without_their_own(bot: SlackBot) -> None:
    from bot.adapters.slack.workspaces import NotInstalled, WorkspaceBot

    workspaces = bot.adapter.workspaces
    await workspaces.save(WorkspaceBot(enterprise_id="E0ORG", is_enterprise_install=True, bot_token="xoxb-org", bot_user_id="U0ORGBOT"))
    assert (await workspaces.bot("T0ANY", "E0ORG")).bot_token == "xoxb-org"
    with pytest.raises(NotInstalled):
        await workspaces.bot("T0ANY")  # no enterprise known: no install of its own
    await workspaces.save(WorkspaceBot(team_id="T0OWN", enterprise_id="E0ORG", bot_token="xoxb-own"))
    assert (await workspaces.bot("T0OWN", "E0ORG")).bot_token == "xoxb-own"  # its own install first
