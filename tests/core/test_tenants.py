"""Tenants: a job exists only inside its own (platform, workspace); admins act only at home."""
from __future__ import annotations

import asyncio

import pytest

from bot.app import App
from bot.core.actions import perform
from bot.core.commands import parse_command
from bot.core.dispatch import run_command
from bot.core.errors import JobNotFound, NotAllowed
from bot.core.models import Actor, GenerateRequest, JobStatus, Origin
from bot.core.views import Action

ACME = Origin(platform="slack", workspace_id="T0ACME", channel_id="C1", user_id="U0ALICE")
ACME_OTHER_CHANNEL = ACME.model_copy(update={"channel_id": "C2", "user_id": "U0BOB"})
ACME_SAME_CHANNEL = ACME.model_copy(update={"user_id": "U0BOB"})
GLOBEX = Origin(platform="slack", workspace_id="T0GLOBEX", channel_id="C1", user_id="U0EVE")
GUILD = Origin(platform="discord", workspace_id="111", channel_id="222", user_id="333")


async def _done(app: App, origin: Origin, prompt: str = "a lighthouse") -> str:
    job = await app.service.submit(GenerateRequest(prompt=prompt, seconds=1, size="128x72"), origin)
    await asyncio.wait_for(app.runner.wait(job.id), 20)
    return job.id


async def test_another_tenants_job_does_not_exist(app: App) -> None:
    job_id = await _done(app, ACME)
    for stranger in (GLOBEX, GUILD):
        for key in (job_id, job_id[:4]):
            with pytest.raises(JobNotFound):
                await app.service.get_for(key, stranger)
            reply = None
            with pytest.raises(JobNotFound):
                reply = await run_command(app.service, parse_command(f"/job {key}"), stranger)
            assert reply is None
            for action in (Action.REROLL, Action.REMIX, Action.EXTEND, Action.DM, Action.CANCEL):
                with pytest.raises(JobNotFound):
                    await perform(app.service, action, key, actor=Actor.of(stranger, is_admin=True), origin=stranger, prompt="x")
    assert len(await app.store.list(limit=50)) == 1, "nothing was started for a stranger"
    assert (await app.service.get_for(job_id[:4], ACME)).id == job_id
    assert (await app.service.get(job_id[:4])).id == job_id, "the operator sees every tenant"


async def test_admins_act_only_in_their_own_tenant(app: App) -> None:
    job_id = await _done(app, ACME)
    with pytest.raises(JobNotFound):
        await app.service.delete(job_id, Actor.of(GLOBEX, is_admin=True))
    with pytest.raises(NotAllowed):
        await app.service.delete(job_id, Actor.of(ACME_SAME_CHANNEL))  # not the owner, not an admin
    deleted = await app.service.delete(job_id, Actor.of(ACME_SAME_CHANNEL, is_admin=True))
    assert deleted.deleted_at is not None


async def test_reusing_someone_elses_job_is_allowed_in_its_channel_and_paid_by_the_asker(app: App) -> None:
    job_id = await _done(app, ACME)
    with pytest.raises(NotAllowed, match="only in the channel"):
        await app.service.reroll(job_id, ACME_OTHER_CHANNEL)
    child = await app.service.reroll(job_id, ACME_SAME_CHANNEL)
    assert child.origin.user_id == "U0BOB" and child.parent_id == job_id
    done = await asyncio.wait_for(app.runner.wait(child.id), 20)
    assert done.status is JobStatus.COMPLETED


async def test_the_same_workspace_id_on_two_platforms_is_two_tenants(app: App) -> None:
    """Slack team "T1" and Discord guild "T1" (ids are free text: nothing stops them matching),
    with the same channel and user ids too: neither sees, acts on or configures the other's."""
    from bot.core.dispatch import run_command as say
    from storage.gallery import GalleryQuery

    slack = Origin(platform="slack", workspace_id="T1", channel_id="C1", user_id="U1")
    discord = Origin(platform="discord", workspace_id="T1", channel_id="C1", user_id="U1")
    slack_job = await _done(app, slack, "a slack lighthouse")
    discord_job = await _done(app, discord, "a discord lighthouse")
    for job_id, stranger in ((slack_job, discord), (discord_job, slack)):
        for key in (job_id, job_id[:4]):
            with pytest.raises(JobNotFound):
                await app.service.get_for(key, stranger)
            with pytest.raises(JobNotFound):
                await say(app.service, parse_command(f"/job {key}"), stranger)
            for action in (Action.REROLL, Action.REMIX, Action.EXTEND, Action.DM, Action.CANCEL):
                with pytest.raises(JobNotFound):
                    await perform(app.service, action, key, actor=Actor.of(stranger, is_admin=True), origin=stranger, prompt="x")
        with pytest.raises(JobNotFound):
            await app.service.delete(job_id, Actor.of(stranger, is_admin=True))
    assert len(await app.store.list(limit=50)) == 2, "nothing was started across platforms"
    # Each gallery (and its search) holds its own platform's job only.
    for origin, mine in ((slack, slack_job), (discord, discord_job)):
        for search in (None, "lighthouse"):
            page = await app.store.gallery(GalleryQuery(platform=origin.platform, workspace_id="T1", search=search))
            assert [j.id for j in page] == [mine], f"{origin.platform} T1 sees {[j.prompt for j in page]}"
        assert [j.id for j in await app.service.list_jobs(origin=origin)] == [mine]
    # A setting made by Slack T1's admin is not Discord T1's.
    await say(app.service, parse_command("/settings set max_seconds 2"), slack, Actor.of(slack, is_admin=True))
    assert "max_seconds: 2" in (await say(app.service, parse_command("/settings"), slack)).text
    assert "max_seconds: —" in (await say(app.service, parse_command("/settings"), discord)).text
