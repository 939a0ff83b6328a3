"""Settings per tenant, channel and user, changed in chat by admins; the most specific wins."""
from __future__ import annotations

import asyncio

import pytest

from bot.app import App
from bot.core.commands import parse_command
from bot.core.dispatch import run_command
from bot.core.errors import NotAllowed
from bot.core.models import Actor, GenerateRequest, Origin
from providers.errors import InvalidRequest

HERE = Origin(platform="slack", workspace_id="T1", channel_id="C1", user_id="U0ADMIN")
OTHER_CHANNEL = HERE.model_copy(update={"channel_id": "C2", "user_id": "U0USER"})
SAME_CHANNEL_USER = HERE.model_copy(update={"user_id": "U0USER"})
ELSEWHERE = Origin(platform="slack", workspace_id="T2", channel_id="C1", user_id="U0ADMIN")
ADMIN = Actor.of(HERE, is_admin=True)


async def say(app: App, text: str, origin: Origin, actor: Actor | None = None) -> str:
    return (await run_command(app.service, parse_command(text), origin, actor)).text


async def test_a_non_admin_cannot_change_tenant_settings(app: App) -> None:
    with pytest.raises(NotAllowed, match="Only an admin"):
        await say(app, "/settings set max_seconds 2", SAME_CHANNEL_USER)
    with pytest.raises(NotAllowed, match="set by admins"):
        await say(app, "/settings me max_seconds 20", SAME_CHANNEL_USER)
    assert "max_seconds: —" in await say(app, "/settings", SAME_CHANNEL_USER)


async def test_the_channel_overrides_the_tenant_and_the_user_sets_their_defaults(app: App) -> None:
    assert "max_seconds here: 2" in await say(app, "/settings set max_seconds 2", HERE, ADMIN)
    assert "in this channel: 4" in await say(app, "/settings channel max_seconds 4", HERE, ADMIN)
    with pytest.raises(InvalidRequest, match="at most 2 seconds"):
        await app.service.submit(GenerateRequest(prompt="too long elsewhere", seconds=3, size="128x72"), OTHER_CHANNEL)
    job = await app.service.submit(GenerateRequest(prompt="fine in the channel", seconds=3, size="128x72"), SAME_CHANNEL_USER)
    assert job.params.seconds == 3
    shown = await say(app, "/settings", SAME_CHANNEL_USER)
    assert "max_seconds: 4 (channel)" in shown
    # Another workspace is untouched.
    assert (await app.service.submit(GenerateRequest(prompt="free over there", seconds=6, size="128x72"), ELSEWHERE)).params.seconds == 6
    # A user's own default seconds and size.
    await say(app, "/settings me seconds 2", SAME_CHANNEL_USER)
    await say(app, "/settings me size 192x108", SAME_CHANNEL_USER)
    mine = await app.service.submit(GenerateRequest(prompt="my defaults"), SAME_CHANNEL_USER)
    assert (mine.params.seconds, mine.params.size) == (2, "192x108")
    await asyncio.gather(*(app.runner.wait(j.id) for j in (job, mine)))
    assert "back to the default" in await say(app, "/settings unset max_seconds channel", HERE, ADMIN)
    with pytest.raises(InvalidRequest, match="at most 2 seconds"):
        await app.service.submit(GenerateRequest(prompt="now the tenant's 2 s again", seconds=3, size="128x72"), SAME_CHANNEL_USER)


async def test_allowed_pipelines_channels_and_budgets(app: App) -> None:
    await say(app, "/settings set pipelines local", HERE, ADMIN)
    with pytest.raises(NotAllowed, match="'local-image' pipeline is not allowed"):
        await app.service.submit(GenerateRequest(prompt="a still", kind="image", pipeline="local-image"), HERE)
    await say(app, "/settings set channels C1", HERE, ADMIN)
    with pytest.raises(NotAllowed, match="only in the channels"):
        await app.service.submit(GenerateRequest(prompt="wrong room", seconds=1, size="128x72"), OTHER_CHANNEL)
    await say(app, "/settings set user_budget_usd 0", HERE, ADMIN)
    usage = await say(app, "/usage", HERE, ADMIN)
    assert "of your $0.00 daily budget" in usage
    with pytest.raises(InvalidRequest, match="not a number"):
        await say(app, "/settings set user_budget_usd lots", HERE, ADMIN)
    with pytest.raises(InvalidRequest, match="No setting 'colour'"):
        await say(app, "/settings set colour red", HERE, ADMIN)


async def test_a_burst_in_one_tenant_reads_its_settings_once_and_a_change_is_never_missed(app: App) -> None:
    """Concurrent callers share one read of a tenant's settings; a change made while a read is under
    way is seen by everyone who asks after it; each caller gets its own copy of list values."""
    await say(app, "/settings set channels C1", HERE, ADMIN)
    tenant = app.service.tenant_settings
    store = tenant.store
    reads: list[tuple[str, str | None]] = []
    release, started = asyncio.Event(), asyncio.Event()
    original = store.settings_rows

    async def slow_rows(platform: str, workspace_id: str | None) -> list[tuple[str, str, str, object]]:
        reads.append((platform, workspace_id))
        rows = await original(platform, workspace_id)  # read now, answered late
        started.set()
        await release.wait()
        return rows

    store.settings_rows = slow_rows  # type: ignore[method-assign]
    try:
        burst = [asyncio.ensure_future(tenant.effective(SAME_CHANNEL_USER)) for _ in range(50)]
        await asyncio.wait_for(started.wait(), 10)  # the one read has its rows; all fifty asked before it began
        assert reads == [("slack", "T1")], "fifty callers, one read under way"
        # An admin changes a setting while that read is still out: whoever asks next reads again.
        store.settings_rows = original  # type: ignore[method-assign]
        await say(app, "/settings set channels C1,C2", HERE, ADMIN)
        assert (await asyncio.wait_for(tenant.effective(OTHER_CHANNEL), 10)).get("channels") == ["C1", "C2"]
        release.set()
        shared = await asyncio.gather(*burst)
    finally:
        store.settings_rows = original  # type: ignore[method-assign]
    assert all(here.get("channels") == ["C1"] for here in shared), "the burst got the read it waited for"
    shared[0].get("channels").append("C9")
    assert shared[1].get("channels") == ["C1"], "each caller has its own list"
