"""Result buttons, modals and reactions: each produces what a Slack user would see."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.core.models import Job, JobKind, JobStatus
from tests.fakes.slack_api import SlackBot, SlackEmulator, buttons_of, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    slack_env(monkeypatch, slack, VIDEOBOT_ADMIN_USER_IDS="U0BOTADMIN")
    running = await start_slack_bot()
    try:
        yield running
    finally:
        await running.close()


def status_messages(slack: SlackEmulator) -> list[str]:
    return [ts for ts, m in slack.messages.items() if "thread_ts" not in m and not m.get("files")]


async def finished(bot: SlackBot, slack: SlackEmulator, before: int) -> tuple[Job, str]:
    """The job of the next new status message, once done and its card shows the buttons."""
    ts = (await slack.wait_for(lambda: status_messages(slack)[before:], timeout=10))[0]
    job = await job_of_message(bot.app, ts)
    job = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
    await slack.wait_for(lambda: "vb_reroll" in dict(buttons_of(slack.messages[ts])), timeout=5)  # the result's buttons
    return job, ts


async def make_video(bot: SlackBot, slack: SlackEmulator, user: str = "U0ALICE") -> tuple[Job, str]:
    before = len(status_messages(slack))
    await slack.slash(bot.url, "/video", "a paper boat on a pond --seconds 1 --size 256x144", user_id=user)
    return await finished(bot, slack, before)


async def test_reroll_remix_and_extend_buttons_make_child_jobs_with_their_own_status(bot: SlackBot, slack: SlackEmulator) -> None:
    parent, ts = await make_video(bot, slack)
    assert parent.status is JobStatus.COMPLETED

    before = len(status_messages(slack))
    sent = await slack.click(bot.url, ts, "vb_reroll", parent.id, user_id="U0BOB")
    assert sent.status == 200 and sent.elapsed < 3
    child, child_ts = await finished(bot, slack, before)
    assert (child.kind, child.parent_id, child.origin.user_id, child.status) == (JobKind.VARIATION, parent.id, "U0BOB", JobStatus.COMPLETED)
    assert child.prompt == parent.prompt and child_ts != ts

    # Remix…: a modal asks for the prompt; submitting it starts the remix.
    await slack.click(bot.url, ts, "vb_remix", parent.id)
    view = await slack.wait_for(lambda: slack.views[-1] if slack.views else None)
    assert view["callback_id"] == "vb_remix_modal" and view["blocks"][0]["block_id"] == "prompt"
    before = len(status_messages(slack))
    sent = await slack.submit_view(bot.url, view, {"prompt": "the same pond at night, lanterns"})
    assert sent.status == 200 and sent.body == ""  # the modal closes
    remix, _ = await finished(bot, slack, before)
    assert (remix.kind, remix.parent_id, remix.prompt) == (JobKind.REMIX, parent.id, "the same pond at night, lanterns")

    # Extend…: a form slip stays in the modal, next to the field.
    await slack.click(bot.url, ts, "vb_extend", parent.id)
    view = await slack.wait_for(lambda: slack.views[-1] if slack.views[-1]["callback_id"] == "vb_extend_modal" else None)
    sent = await slack.submit_view(bot.url, view, {"seconds": "two"})
    assert sent.json() == {"response_action": "errors", "errors": {"seconds": "A whole number of seconds, for example 4."}}
    before = len(status_messages(slack))
    await slack.submit_view(bot.url, view, {"seconds": "1", "prompt": "the boat drifts away"})
    extension, _ = await finished(bot, slack, before)
    assert (extension.kind, extension.parent_id, extension.params.seconds) == (JobKind.EXTEND, parent.id, 1)


async def test_delete_button_is_for_the_owner_or_an_admin_and_removes_messages_and_files(bot: SlackBot, slack: SlackEmulator) -> None:
    job, ts = await make_video(bot, slack)
    file_ids = job.origin.extra["file_ids"]
    assert len(file_ids) == 2 and all(f in slack.files for f in file_ids)

    await slack.click(bot.url, ts, "vb_delete", job.id, user_id="U0MALLORY")
    refusal = await slack.wait_for(lambda: [r for r in slack.responses if r["key"] == "act-U0MALLORY"])
    assert refusal[0]["response_type"] == "ephemeral" and "Only the person who asked" in refusal[0]["text"]
    assert ts in slack.messages and all(f in slack.files for f in file_ids)

    slack.users["U0WSADMIN"] = {"is_admin": True}  # a workspace admin, as Slack's users.info says
    await slack.click(bot.url, ts, "vb_delete", job.id, user_id="U0WSADMIN")
    await slack.wait_for(lambda: ts not in slack.messages and not any(f in slack.files for f in file_ids))
    assert not slack.thread(ts)
    stored = await bot.app.service.get(job.id)
    assert stored.deleted_at is not None and stored.output_path is None


async def test_reactions_reroll_cancel_and_delete_and_others_are_ignored(bot: SlackBot, slack: SlackEmulator) -> None:
    job, ts = await make_video(bot, slack)

    # 🔁 on the result message (the file in the thread) re-rolls, looked up through the store.
    before = len(status_messages(slack))
    sent = await slack.react(bot.url, job.origin.result_message_id or "", "repeat", user_id="U0CAROL")
    assert sent.status == 200
    child, _ = await finished(bot, slack, before)
    assert (child.kind, child.parent_id, child.origin.user_id) == (JobKind.VARIATION, job.id, "U0CAROL")

    # Reactions elsewhere: nothing at all happens.
    calls = len(slack.calls)
    other = slack.user_message("lunch?")  # a person's message
    await slack.react(bot.url, other, "repeat")
    await slack.react(bot.url, ts, "thumbsup")
    await asyncio.sleep(0.3)
    assert len(slack.calls) == calls and len(status_messages(slack)) == before + 2

    # ❌ by someone else: refused, privately; by the owner: the finished job is deleted.
    await slack.react(bot.url, ts, "x", user_id="U0MALLORY")
    note = await slack.wait_for(lambda: [e for e in slack.ephemerals if e["user"] == "U0MALLORY"])
    assert "Only the person who asked" in note[0]["text"] and note[0]["channel"] == slack.channel_id
    assert ts in slack.messages
    await slack.react(bot.url, ts, "x")
    await slack.wait_for(lambda: ts not in slack.messages)
    assert (await bot.app.service.get(job.id)).deleted_at is not None


async def test_x_on_a_running_job_cancels_it(bot: SlackBot, slack: SlackEmulator) -> None:
    before = len(status_messages(slack))
    await slack.slash(bot.url, "/video", "a long slow sunrise --seconds 20 --size 640x360")
    ts = (await slack.wait_for(lambda: status_messages(slack)[before:]))[0]
    job = await job_of_message(bot.app, ts)
    await slack.react(bot.url, ts, "x")
    done = await asyncio.wait_for(bot.app.runner.wait(job.id), 10)
    assert done.status is JobStatus.CANCELLED
    await slack.wait_for(lambda: "Cancelled" in slack.text_of(ts))
