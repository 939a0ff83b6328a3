"""Spends above the confirm threshold wait for their owner: nothing is queued or reserved until Confirm."""
from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from bot.app import App
from bot.core.commands import parse_command
from bot.core.dispatch import run_command
from bot.core.errors import JobNotFound, JobStateError, LimitReached, NeedsConfirmation, NotAllowed
from bot.core.models import Actor, JobStatus, Origin
from tests.fakes.scripted_provider import ScriptedServer
from tests.core.test_core_runner import make_app, req

ALICE = Origin(platform="slack", workspace_id="T1", channel_id="C1", user_id="alice")
BOB = ALICE.model_copy(update={"user_id": "bob"})


async def test_nothing_is_queued_until_the_owner_confirms(settings: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_CONFIRM_ABOVE_USD", "0.50")
    server = ScriptedServer()
    app = await make_app(server, cost=0.75)
    try:
        with pytest.raises(NeedsConfirmation) as asked:
            await app.service.submit(req("a pricey idea"), ALICE)
        token = asked.value.token
        assert "$0.75" in asked.value.message and f"confirm {token}" in asked.value.message
        assert await app.store.list() == [] and server.creates == [], "nothing queued, nothing reserved"
        with pytest.raises(NotAllowed):
            await app.service.confirm(token, Actor.of(BOB))
        reply = await run_command(app.service, parse_command(f"/confirm {token}"), ALICE)
        assert reply.started and reply.job is not None
        done = await asyncio.wait_for(app.runner.wait(reply.job.id), 10)
        assert done.status is JobStatus.COMPLETED and len(server.creates) == 1
        with pytest.raises(JobStateError, match="already confirmed"):
            await app.service.confirm(token, Actor.of(ALICE))
        # Cheap jobs and the CLI (the operator) are never asked.
        cli = await app.service.submit(req("operator's own"), Origin(platform="cli", user_id="ops"))
        assert cli.status is JobStatus.QUEUED
    finally:
        await app.close()


async def test_declined_and_expired_requests_spend_nothing(settings: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_CONFIRM_ABOVE_USD", "0.10")
    server = ScriptedServer()
    app = await make_app(server, cost=0.25)
    try:
        with pytest.raises(NeedsConfirmation) as first:
            await app.service.submit(req("maybe"), ALICE)
        reply = await run_command(app.service, parse_command(f"/decline {first.value.token}"), ALICE)
        assert "nothing was spent" in reply.text
        with pytest.raises(NeedsConfirmation) as second:
            await app.service.submit(req("later"), ALICE)
        with sqlite3.connect(app.settings.core.data_dir / "videobot.sqlite3") as conn:  # ten minutes pass
            conn.execute("UPDATE pending_spends SET expires_at = ? WHERE token = ?", (time.time() - 1, second.value.token))
        with pytest.raises(JobStateError, match="expired after 10 minutes"):
            await app.service.confirm(second.value.token, Actor.of(ALICE))
        with pytest.raises(JobNotFound):
            await app.service.confirm("nosuchtk", Actor.of(ALICE))
        assert await app.store.list() == [] and server.creates == []
    finally:
        await app.close()


async def test_a_cooldown_spaces_out_paid_commands(settings: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_COOLDOWN_SECONDS", "60")
    app = await make_app(ScriptedServer(), cost=0.25)
    try:
        await app.service.submit(req("one"), ALICE)
        with pytest.raises(LimitReached, match="60 s apart"):
            await app.service.submit(req("two"), ALICE)
        await app.service.submit(req("another user"), BOB)
    finally:
        await app.close()
