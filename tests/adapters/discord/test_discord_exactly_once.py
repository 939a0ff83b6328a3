"""Exactly-once posts on Discord: a repeated delivery attempt finds the first post (nonce with
enforce_nonce on the bot-token path, a history scan for interaction follow-ups), delivery
errors are classified transient or permanent, and message references survive a crash
between a post and the write of its id. Real discord.py against the emulator."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.adapters.discord_bot.status import STATUS_REPLY_TO
from bot.app import App, open_app
from bot.config import load_settings
from bot.core.errors import DeliveryFailed
from bot.core.models import Job, JobStatus, Origin
from providers.polling import PollPolicy
from tests.fakes.discord_api import (  # noqa: F401 (emu is a fixture)
    BOT_PERMISSIONS,
    SEND_MESSAGES,
    DiscordBot,
    DiscordEmulator,
    channel_posts,
    discord_env,
    emu,
    followup_with_file,
    start_bot,
)
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline

pytestmark = pytest.mark.timeout(60)
FAST = PollPolicy(interval=0.02, min_interval=0.01, backoff_base=0.01)
#: The interaction token counts as expired at once: status and result use the bot token.
BOT_TOKEN_ONLY = {"DISCORD_TOKEN_MARGIN_SECONDS": "900"}
Deliver = Callable[[Job], Awaitable[dict[str, Any] | None]]


def with_scripted(server: ScriptedServer | None = None) -> Callable[[App], None]:
    def register(app: App) -> None:
        if server is not None:
            app.registry.register("scripted", lambda: scripted_pipeline(server))
        app.runner.poll_policy = FAST
        app.runner.delivery_policy = PollPolicy(backoff_base=0.05, backoff_max=0.2)  # delivery retries in tenths

    return register


def results_of(emu: DiscordEmulator, job_id: str) -> list[dict[str, Any]]:
    """Every message in the channel that carries this job's file (what a user would scroll past)."""
    return [m for m in emu.channel_messages(emu.channel_id) if any(a["filename"].startswith(job_id) for a in m["attachments"])]


def attempt(job: Job, number: int) -> Job:
    """The job as the runner hands it to a later delivery attempt (recorded before the call)."""
    return job.model_copy(update={"state": {**job.state, "delivery": {"attempt": number}}})


def deliver_twice(bot: DiscordBot, outcomes: list[tuple[Any, Any]]) -> None:
    """Each delivery runs as attempt 1, then again as attempt 2 with nothing stored in between:
    what a runner that died right after the first post does when it comes back."""
    deliver: Deliver = bot.adapter.deliver

    async def twice(job: Job) -> dict[str, Any] | None:
        first = await deliver(attempt(job, 1))
        second = await deliver(attempt(job, 2))
        outcomes.append((first, second))
        return second

    bot.app.runner.deliverers["discord"] = twice


def capture(bot: DiscordBot, seen: list[BaseException | dict[str, Any] | None]) -> None:
    deliver: Deliver = bot.adapter.deliver

    async def recorded(job: Job) -> dict[str, Any] | None:
        try:
            result = await deliver(job)
        except BaseException as exc:
            seen.append(exc)
            raise
        seen.append(result)
        return result

    bot.app.runner.deliverers["discord"] = recorded


async def job_of(bot: DiscordBot, interaction: Any) -> Job:
    await asyncio.wait_for(interaction.answered.wait(), 5)
    for _ in range(250):
        job = await bot.app.service.find_by_message("discord", interaction.original_id or "")
        if job is not None:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError("no job for that status message")


async def finished(bot: DiscordBot, interaction: Any) -> Job:
    return await asyncio.wait_for(bot.app.runner.wait((await job_of(bot, interaction)).id), 30)


# --- (a) a second attempt posts nothing new ------------------------------------------------


async def test_bot_token_posts_carry_a_job_nonce_and_a_lost_answer_is_not_posted_twice(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    discord_env(monkeypatch, emu, **BOT_TOKEN_ONLY)
    bot = await start_bot()
    try:
        # Discord makes the message but the answer is a 500: discord.py sends the same create
        # again (same nonce), and Discord answers with the message it already made.
        emu.fail_next("POST", rf"^/channels/{emu.channel_id}/messages$", status=500, after=True)
        interaction = await emu.slash("video", {"prompt": "a paper boat on a pond", "seconds": 1, "size": "256x144"})
        job = await finished(bot, interaction)
        assert job.status is JobStatus.COMPLETED
        (posted,) = results_of(emu, job.id)
        assert job.origin.result_message_id == posted["id"]
        creates = emu.calls_to("POST", rf"^/channels/{emu.channel_id}/messages$")
        assert [c.status for c in creates] == [500, 200]
        assert all(c.json["nonce"] == f"vbr-{job.id}" and c.json["enforce_nonce"] is True for c in creates)
    finally:
        await bot.close()


@pytest.mark.parametrize("history", ["readable", "forbidden"])
async def test_a_second_attempt_on_the_bot_token_path_returns_the_first_post(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch, history: str
) -> None:
    discord_env(monkeypatch, emu, **BOT_TOKEN_ONLY)
    if history == "forbidden":  # no Read Message History: only the nonce can tell
        emu.history_forbidden.add(emu.channel_id)
    bot = await start_bot()
    outcomes: list[tuple[Any, Any]] = []
    deliver_twice(bot, outcomes)
    try:
        interaction = await emu.slash("video", {"prompt": "a paper boat on a pond", "seconds": 1, "size": "256x144"})
        job = await finished(bot, interaction)
        (posted,) = results_of(emu, job.id)
        assert outcomes == [({"result_message_id": posted["id"]}, {"result_message_id": posted["id"]})]
        assert job.origin.result_message_id == posted["id"]
        creates = emu.calls_to("POST", rf"^/channels/{emu.channel_id}/messages$")
        # Readable history: the earlier post is found and nothing is sent. Otherwise the create
        # is sent again and Discord dedupes it by nonce.
        assert len(creates) == (1 if history == "readable" else 2)
    finally:
        await bot.close()


async def test_a_second_attempt_through_the_interaction_finds_the_follow_up(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    discord_env(monkeypatch, emu)
    emu.app_permissions = BOT_PERMISSIONS & ~SEND_MESSAGES  # the bot may not post here: results are follow-ups
    bot = await start_bot()
    outcomes: list[tuple[Any, Any]] = []
    deliver_twice(bot, outcomes)
    try:
        interaction = await emu.slash("video", {"prompt": "a paper boat on a pond", "seconds": 1, "size": "256x144"})
        job = await finished(bot, interaction)
        posted = followup_with_file(emu, interaction.token)
        assert posted is not None and results_of(emu, job.id) == [posted]
        assert outcomes == [({"result_message_id": posted["id"]}, {"result_message_id": posted["id"]})]
        assert len(emu.calls_to("POST", rf"/webhooks/\d+/{interaction.token}$")) == 1, "one follow-up, not two"
        assert emu.calls_to("GET", rf"^/channels/{emu.channel_id}/messages$"), "the second attempt looked first"
        assert not emu.calls_to("POST", rf"^/channels/{emu.channel_id}/messages$")
    finally:
        await bot.close()


async def test_a_stored_result_id_means_posted(settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    discord_env(monkeypatch, emu, **BOT_TOKEN_ONLY)
    bot = await start_bot()
    try:
        interaction = await emu.slash("video", {"prompt": "a paper boat on a pond", "seconds": 1, "size": "256x144"})
        job = await finished(bot, interaction)
        calls = len(emu.calls)
        assert await bot.adapter.deliver(attempt(job, 3)) == {"result_message_id": job.origin.result_message_id}
        assert len(emu.calls) == calls, "nothing sent, nothing looked up"
    finally:
        await bot.close()


# --- (b) what a failure means ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "transient", "says"),
    [
        ("deleted channel", False, "channel was deleted"),
        ("missing permissions", False, "Send Messages and Attach Files"),
        ("missing access", False, "can no longer see this channel"),
        ("503", True, "Discord is having trouble"),
        ("429 longer than discord.py waits", True, "rate limiting"),
        ("429 after discord.py's retries", True, "rate limiting"),
    ],
)
async def test_delivery_errors_are_transient_or_permanent(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch, fault: str, transient: bool, says: str
) -> None:
    discord_env(monkeypatch, emu, **BOT_TOKEN_ONLY)
    server = ScriptedServer()
    server.release.clear()  # hold the job until the fault is in place
    bot = await start_bot(register=with_scripted(server))
    seen: list[Any] = []
    capture(bot, seen)
    try:
        bot.adapter.client.http.max_ratelimit_timeout = 30.0  # Client(max_ratelimit_timeout=30): its floor
        interaction = await emu.slash("video", {"prompt": "a lighthouse at dusk", "seconds": 1, "pipeline": "scripted"})
        job = await job_of(bot, interaction)
        create = rf"^/channels/{emu.channel_id}/messages$"
        if fault == "deleted channel":
            emu.delete_channel(emu.channel_id)
        elif fault == "missing permissions":
            emu.lock_channel(emu.channel_id, code=50013)
        elif fault == "missing access":
            emu.lock_channel(emu.channel_id, code=50001)
        elif fault == "503":  # a 5xx discord.py does not retry itself (it retries 500/502/504 ~25 s)
            emu.fail_next("POST", create, status=503, count=20)
        elif fault == "429 longer than discord.py waits":  # raises RateLimited without waiting
            emu.fail_next("POST", create, status=429, retry_after=31, count=20)
        else:  # short waits: discord.py sits them out, 5 tries, then raises the 429
            emu.fail_next("POST", create, status=429, retry_after=0.05, count=20)
        server.release.set()
        await emu.wait_for(lambda: seen, timeout=20)
        failure = seen[0]  # (a transient one is retried by the runner: more may follow)
        assert isinstance(failure, DeliveryFailed), failure
        assert failure.transient is transient and says in failure.message
        if not transient:
            assert job.id in failure.message, "the owner is told which job (and how to get it posted)"
        if fault.startswith("429"):
            assert failure.retry_after == (31 if "longer" in fault else 0.05)
        assert results_of(emu, job.id) == []
    finally:
        await bot.close()


async def test_a_deleted_channel_fails_the_follow_up_for_good(settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    discord_env(monkeypatch, emu)
    emu.app_permissions = BOT_PERMISSIONS & ~SEND_MESSAGES  # the bot may not post here: results are follow-ups
    server = ScriptedServer()
    server.release.clear()
    bot = await start_bot(register=with_scripted(server))
    seen: list[Any] = []
    capture(bot, seen)
    try:
        interaction = await emu.slash("video", {"prompt": "a lighthouse at dusk", "seconds": 1, "pipeline": "scripted"})
        await job_of(bot, interaction)
        emu.delete_channel(emu.channel_id)
        server.release.set()
        await emu.wait_for(lambda: seen, timeout=20)
        failure = seen[0]
        assert isinstance(failure, DeliveryFailed) and not failure.transient and "channel was deleted" in failure.message
        assert [c.status for c in emu.calls_to("POST", rf"/webhooks/\d+/{interaction.token}$")] == [404]
    finally:
        await bot.close()


async def test_a_stopped_adapter_is_a_transient_failure(settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    discord_env(monkeypatch, emu, **BOT_TOKEN_ONLY)
    bot = await start_bot()
    try:
        interaction = await emu.slash("video", {"prompt": "a paper boat on a pond", "seconds": 1, "size": "256x144"})
        job = await finished(bot, interaction)
        await bot.adapter.stop()
        unposted = job.model_copy(update={"origin": job.origin.model_copy(update={"result_message_id": None})})
        with pytest.raises(DeliveryFailed) as failed:
            await bot.adapter.deliver(attempt(unposted, 2))
        assert failed.value.transient
    finally:
        await bot.close()


# --- message references stored before anyone can act on them --------------------------------


async def test_a_reaction_on_a_result_whose_id_is_not_stored_yet_finds_the_job(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    discord_env(monkeypatch, emu)
    bot = await start_bot()
    try:
        interaction = await emu.slash("video", {"prompt": "a paper boat on a pond", "seconds": 1, "size": "256x144"})
        job = await finished(bot, interaction)
        # The moment between the post and the write of its id, held open.
        await bot.app.store.update(job.id, result_message_id=None)
        await emu.react(job.origin.result_message_id or "", "✉️", user_id="5005")
        dm = await emu.wait_for(lambda: emu.dm_channels.get("5005") and channel_posts(emu, emu.dm_channels["5005"], with_file=True))
        assert dm[0]["attachments"][0]["filename"] == f"{job.id}.mp4"
    finally:
        await bot.close()


def reroll_statuses(emu: DiscordEmulator, child_id: str) -> list[dict[str, Any]]:
    """Status messages of the job: its id in the text, no file, no result buttons (`vb:`; a status
    message's own buttons are `vbs:`)."""
    return [
        m for m in emu.channel_messages(emu.channel_id)
        if f"job {child_id}" in m["content"] and not m["attachments"]
        and not any(c["custom_id"].startswith("vb:") for row in m["components"] for c in row["components"])
    ]  # fmt: skip


async def test_a_reroll_stored_but_not_announced_gets_one_status_message_after_a_restart(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    discord_env(monkeypatch, emu, **BOT_TOKEN_ONLY)
    first = await start_bot()
    try:
        interaction = await emu.slash("video", {"prompt": "a paper boat on a pond", "seconds": 1, "size": "256x144"})
        parent = await finished(first, interaction)
    finally:
        await first.close()
    # What a 🔁 reaction stores before it posts anything; then the process dies.
    app = await open_app(load_settings())
    origin = Origin(platform="discord", workspace_id=emu.guild_id, channel_id=emu.channel_id, user_id="1001",
                    extra={STATUS_REPLY_TO: parent.origin.result_message_id})  # fmt: skip
    child = await app.service.reroll(parent.id, origin)
    await app.close()
    assert child.origin.status_message_id is None

    second = await start_bot()
    try:
        done = await asyncio.wait_for(second.app.runner.wait(child.id), 30)
        (status,) = await emu.wait_for(lambda: reroll_statuses(emu, child.id))
        await emu.wait_for(lambda: "✅ Done" in emu.messages[status["id"]]["content"])
        done = await second.app.service.get(child.id)
        assert done.origin.status_message_id == status["id"]
        (result,) = results_of(emu, child.id)
        assert emu.calls_to("POST", rf"^/channels/{emu.channel_id}/messages$")
        assert reroll_statuses(emu, child.id) == [emu.messages[status["id"]]], "one status message"
        assert result["id"] == done.origin.result_message_id
    finally:
        await second.close()


async def test_a_reroll_status_posted_but_not_stored_is_found_not_posted_again(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    discord_env(monkeypatch, emu, **BOT_TOKEN_ONLY)
    server = ScriptedServer()
    first = await start_bot(register=with_scripted(server))
    try:
        interaction = await emu.slash("video", {"prompt": "a paper boat on a pond", "seconds": 1, "pipeline": "scripted"})
        parent = await finished(first, interaction)
        server.release.clear()  # the re-roll stays running
        await emu.react(parent.origin.result_message_id or "", "🔁")
        child = await emu_child(first, parent)
        for _ in range(500):
            child = await first.app.service.get(child.id)
            if child.origin.status_message_id and child.remote_id:
                break
            await asyncio.sleep(0.02)
        assert child.origin.status_message_id and child.remote_id
    finally:
        await first.close()
    # The process died after the post and before the write of its id.
    app = await open_app(load_settings())
    await app.store.update(child.id, status_message_id=None)
    await app.close()
    emu.nonce_window = 0  # past Discord's nonce window: only the look at the channel can tell
    posts_before = len(emu.calls_to("POST", rf"^/channels/{emu.channel_id}/messages$"))

    second = await start_bot(register=with_scripted(server))
    try:
        server.release.set()
        done = await asyncio.wait_for(second.app.runner.wait(child.id), 30)
        (status,) = reroll_statuses(emu, child.id)
        await emu.wait_for(lambda: "✅ Done" in emu.messages[status["id"]]["content"])
        assert (await second.app.service.get(child.id)).origin.status_message_id == status["id"]
        creates = emu.calls_to("POST", rf"^/channels/{emu.channel_id}/messages$")[posts_before:]
        assert len(creates) == 1 and creates[0].files, "after the restart only the result was posted"
        assert results_of(emu, child.id)[0]["id"] == done.origin.result_message_id
    finally:
        await second.close()


async def emu_child(bot: DiscordBot, parent: Job) -> Job:
    for _ in range(250):
        found = await bot.app.store.children(parent.id)
        if found:
            return found[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no re-roll of {parent.id}")


# --- end to end through the runner: retry, undelivered, redeliver ---------------------------


async def wait_status(bot: DiscordBot, job_id: str, done: Callable[[Job], bool]) -> Job:
    for _ in range(1000):
        job = await bot.app.service.get(job_id)
        if done(job):
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never got there: {job.status.value} {job.error_code}")


@pytest.mark.parametrize("answer", ["lost", "refused"])
async def test_a_5xx_on_delivery_is_retried_and_the_result_posted_once(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    # "lost": Discord made the message but answered 503; the retry finds it instead of posting.
    discord_env(monkeypatch, emu, **BOT_TOKEN_ONLY)
    bot = await start_bot(register=with_scripted())
    try:
        create = rf"^/channels/{emu.channel_id}/messages$"
        emu.fail_next("POST", create, status=503, after=answer == "lost")
        interaction = await emu.slash("video", {"prompt": "a paper boat on a pond", "seconds": 1, "size": "256x144"})
        job = await finished(bot, interaction)
        assert job.status is JobStatus.COMPLETED and job.error_code is None
        assert job.delivery_attempt == 2
        (posted,) = results_of(emu, job.id)
        assert job.origin.result_message_id == posted["id"]
        assert [c.status for c in emu.calls_to("POST", create)] == ([503] if answer == "lost" else [503, 200])
        await emu.wait_for(lambda: "✅ Done" in emu.messages[interaction.original_id or ""]["content"])
        assert "⚠️" not in emu.messages[interaction.original_id or ""]["content"]
    finally:
        await bot.close()


async def test_a_deleted_channel_ends_the_job_completed_undelivered_with_the_file_kept(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    discord_env(monkeypatch, emu)
    server = ScriptedServer()
    server.release.clear()
    bot = await start_bot(register=with_scripted(server))
    try:
        interaction = await emu.slash("video", {"prompt": "a lighthouse at dusk", "seconds": 1, "pipeline": "scripted"})
        job = await job_of(bot, interaction)
        emu.delete_channel(emu.channel_id)
        server.release.set()
        done = await asyncio.wait_for(bot.app.runner.wait(job.id), 30)
        assert done.status is JobStatus.COMPLETED and done.error_code == "undelivered"
        assert done.error_message and "channel was deleted" in done.error_message and f"redeliver {job.id}" in done.error_message
        assert done.output_path and Path(done.output_path).exists(), "the paid-for file is kept"
        assert results_of(emu, job.id) == [] and done.origin.result_message_id is None
        # No channel to show it in: the owner is told privately.
        dm = await emu.wait_for(lambda: emu.dm_channels.get("1001") and channel_posts(emu, emu.dm_channels["1001"]))
        assert "channel was deleted" in dm[0]["content"] and job.id in dm[0]["content"]
    finally:
        await bot.close()


async def test_a_missing_permission_then_redeliver_posts_the_result_once(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    discord_env(monkeypatch, emu, **BOT_TOKEN_ONLY)
    server = ScriptedServer()
    server.release.clear()
    bot = await start_bot(register=with_scripted(server))
    try:
        interaction = await emu.slash("video", {"prompt": "a lighthouse at dusk", "seconds": 1, "pipeline": "scripted"})
        job = await job_of(bot, interaction)
        emu.lock_channel(emu.channel_id, code=50013)
        server.release.set()
        done = await asyncio.wait_for(bot.app.runner.wait(job.id), 30)
        assert done.status is JobStatus.COMPLETED and done.error_code == "undelivered"
        assert done.error_message and "Send Messages and Attach Files" in done.error_message

        del emu.locked_channels[emu.channel_id]  # an admin fixed the permissions
        await bot.app.service.redeliver(job.id)
        again = await wait_status(bot, job.id, lambda j: j.status is JobStatus.COMPLETED and j.error_code is None)
        (posted,) = results_of(emu, job.id)
        assert again.origin.result_message_id == posted["id"] and len(server.creates) == 1
        await emu.wait_for(lambda: "✅ Done" in emu.messages[interaction.original_id or ""]["content"])
    finally:
        await bot.close()
