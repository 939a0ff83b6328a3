"""Rotating tokens across processes: a gateway and two workers (`videobot run --role ...`) on one
database serve two workspaces installed through the OAuth flow, with tokens that expire during
the jobs. Every expiring token is refreshed by one process (the refresh lock in the database): no
refresh token is ever offered twice (the emulator's refresh tokens are good once, as Slack's), no
call carries an expired token, and every job is answered, updated and delivered with its own
workspace's token. Both backends."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.chaos import Latency, World
from tests.chaos.verdict import PIPELINES
from tests.fakes.slack_api import install, oauth_env
from tests.scaleout import StoreView
from tests.stores import BACKENDS, backend_url
from tests.system.test_workers import environment, start_all

pytestmark = pytest.mark.timeout(150)

SPEC = PIPELINES["sora"]
CHANNEL = {"T0ALPHA": "C0ALPHA", "T0BETA": "C0BETA"}
#: Tokens live 4 s and are refreshed within 3.5 s of their expiry: due half a second after each
#: refresh, and a refresh takes half a second at the emulator, so the processes often want a token
#: while another is refreshing it: without the lock in the database, two would offer the same
#: refresh token (and the second be refused).
LIFETIME, MARGIN, REFRESH_DELAY = 4, 3.5, 0.5


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    return backend_url(request)


async def test_expiring_tokens_are_refreshed_once_each_with_a_gateway_and_two_workers(tmp_path: Path, database_url: str) -> None:
    data = tmp_path / "data"
    db = StoreView(database_url, data)
    async with World(tmp_path / "emulators", latency=Latency(0, 0, 0, 0, 0)) as world:
        slack = world.slack
        world.openai.seconds_to_complete = 2.5
        for team, channel in CHANNEL.items():
            slack.add_team(team, channel)
        slack.rotation_seconds = LIFETIME
        slack.refresh_delay = REFRESH_DELAY
        env = environment(world, data, database_url, VIDEOBOT_SECRET_KEY="s" * 40, SLACK_TOKEN_REFRESH_MARGIN_SECONDS=str(MARGIN), **oauth_env(slack))
        del env["SLACK_BOT_TOKEN"]
        gateway, a, b = await start_all(env, tmp_path)
        try:
            base = f"http://127.0.0.1:{gateway.port}"
            slack.redirect_uri = f"{base}/slack/oauth_redirect"
            for team in CHANNEL:
                page = await install(slack, f"{base}/slack/install", team)
                assert page.status == 200, page.body
            prompts = {}
            for n in range(3):
                for team, channel in CHANNEL.items():
                    prompt = f"rotation clip {team} {n}"
                    prompts[prompt] = team
                    sent = await slack.slash(gateway.url, "/video", f"{prompt} --pipeline sora {SPEC.flags}", user_id=f"U0{team[2:]}{n}", channel_id=channel)
                    assert sent.status == 200, sent.body
            deadline = time.monotonic() + 90
            while not (len(db.jobs()) == 6 and all(r.status in ("completed", "failed", "cancelled") and (r.result_message_id or r.error_code) for r in db.jobs())):
                for proc in (gateway, a, b):
                    proc.check_alive()
                assert time.monotonic() < deadline, "\n".join(f"{r.id} {r.status} {r.error_message}" for r in db.jobs())
                await asyncio.sleep(0.1)
            rows = db.jobs()
            assert all(r.status == "completed" and r.error_code is None for r in rows), [(r.id, r.status, r.error_message) for r in rows]
            for proc in (gateway, a, b):
                assert await proc.terminate(), f"{proc.name} did not stop on SIGTERM"
        finally:
            for proc in (gateway, a, b):
                if proc.alive:
                    proc.kill()
            db.close()

        refreshes = [g for g in slack.grants if g["grant"] == "refresh_token"]
        assert refreshes and all(g["ok"] for g in refreshes), f"a refresh token was offered twice: {refreshes}"
        assert {g["team"] for g in refreshes} == set(CHANNEL)
        expired = [(c.method, c.team, c.refused) for c in slack.calls if c.refused]
        assert not expired, expired
        for team, channel in CHANNEL.items():
            calls = [c for c in slack.calls if (c.args.get("channel") or c.args.get("channel_id")) == channel]
            assert {c.method for c in calls} >= {"chat.postMessage", "chat.update", "files.completeUploadExternal"}
            assert {c.team for c in calls} == {team}
            # Several tokens of the workspace were used in turn: the jobs outlived the first one.
            assert len({c.token for c in calls}) > 1
        # Each refresh made by exactly one process (and said in its log), the workers' and the gateway's alike.
        made = {p.name: len(p.grep_logs("refreshed the bot token")) for p in (gateway, a, b)}
        assert sum(made.values()) == len(refreshes), made
        print(f"{len(refreshes)} refreshes in all, by process: {made}; tokens used per workspace: "
              f"{ {t: len({c.token for c in slack.calls if c.team == t}) for t in CHANNEL} }")
