"""A prompt's markdown is shown, never rendered, in every message the bot sends on Discord: no
masked link, bold or @everyone made from what a user typed, whatever message carries it."""
from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bot.adapters.discord_bot.render import plain
from bot.core.models import JobStatus
from tests.fakes.discord_api import (  # noqa: F401 (emu is a fixture)
    DiscordBot,
    DiscordEmulator,
    as_read,
    discord_env,
    emu,
    job_of,
    start_bot,
)
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline

pytestmark = pytest.mark.timeout(60)
PROMPT = "```a kite [click](https://evil.example) and **x** for @everyone"
#: A masked link: `[text](url)` whose `[` is not escaped.
MASKED_LINK = re.compile(r"(?<!\\)\[[^\]\n]*\]\(")


@pytest.fixture
async def bot(settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordBot]:
    discord_env(monkeypatch, emu, DISCORD_STATUS_EDIT_WINDOW_SECONDS="1")
    running = await start_bot()
    try:
        yield running
    finally:
        await running.close()


def contents(value: Any) -> Iterator[str]:
    """Every message `content` in a request body (a message, an edit, an interaction callback)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "content" and isinstance(inner, str):
                yield inner
            else:
                yield from contents(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from contents(inner)


def sent_with_prompt(emu: DiscordEmulator) -> list[str]:
    """What the bot sent that carries the prompt (as the user reads it), across every call."""
    return [text for call in emu.calls for text in contents(call.json) if "evil.example" in text]


def assert_shown_not_rendered(text: str) -> None:
    # A code block shows its text as is; it holds no ``` that would end it early.
    assert text.count("```") % 2 == 0, f"a code block broken open: {text!r}"
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    assert not MASKED_LINK.search(text), f"a masked link from the prompt: {text!r}"
    assert "**x**" not in text, f"the prompt's bold is rendered: {text!r}"
    assert "@everyone" not in text, f"the prompt's @everyone is live: {text!r}"


async def test_a_prompts_markdown_is_escaped_everywhere_it_is_shown(bot: DiscordBot, emu: DiscordEmulator) -> None:
    interaction = await emu.slash("video", {"prompt": PROMPT, "seconds": 1, "size": "128x72"})
    job = await asyncio.wait_for(bot.app.runner.wait((await job_of(bot, interaction)).id), 20)
    assert job.status is JobStatus.COMPLETED and job.prompt == PROMPT
    await emu.wait_for(lambda: "✅ Done" in emu.messages[interaction.original_id or ""]["content"], timeout=5)
    listed = await emu.slash("jobs")
    detail = await emu.slash("job", {"id": job.id})
    for answered in (listed, detail):
        await asyncio.wait_for(answered.answered.wait(), 3)

    sent = sent_with_prompt(emu)
    status = emu.messages[interaction.original_id or ""]["content"]
    result = emu.messages[job.origin.result_message_id or ""]["content"]
    assert status in sent and result in sent and len(sent) >= 4  # status edits, result, /jobs, /job
    for text in sent:
        assert_shown_not_rendered(text)
    # Escaped, not mangled: the user reads exactly what was typed.
    assert PROMPT in as_read(status) and PROMPT in as_read(result)
    assert PROMPT in as_read(str(detail.callback["data"]["content"]))  # type: ignore[index]


async def test_a_failure_note_shows_the_error_text_as_written(settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # A provider's error may echo the prompt; the owner's private note shows it literally.
    server = ScriptedServer(fail_job=("refused", f"refused: {PROMPT}"))
    discord_env(monkeypatch, emu, DISCORD_STATUS_EDIT_WINDOW_SECONDS="1")
    running = await start_bot(register=lambda app: app.registry.register("scripted", lambda: scripted_pipeline(server)))
    try:
        interaction = await emu.slash("video", {"prompt": PROMPT, "pipeline": "scripted", "seconds": 1, "size": "128x72"})
        job = await asyncio.wait_for(running.app.runner.wait((await job_of(running, interaction)).id), 20)
        assert job.status is JobStatus.FAILED
        await emu.wait_for(lambda: [t for t in sent_with_prompt(emu) if "failed" in t], timeout=5)
        for text in sent_with_prompt(emu):
            assert_shown_not_rendered(text)
    finally:
        await running.close()


@pytest.mark.parametrize(
    "text",
    [
        PROMPT,
        "[a] **b** [c](https://evil.example)",  # discord.utils.escape_markdown leaves the bold and link live
        "> a quote\n# a heading\n  - a list <#123> <t:1:R> <@&456> a\\[b](http://e.example) ~~s~~ ||spoiler|| __u__",
        "max_seconds --seconds 2 https://gallery.example/g/ab_cd?next=/jobs/x_y",
    ],
)
def test_plain_escapes_every_markup_and_keeps_the_text(text: str) -> None:
    shown = plain(text)
    assert_shown_not_rendered(shown)
    for live in (r"(?<!\\)\*\*", r"(?<!\\)~~", r"(?<!\\)\|\|", r"(?<!\\)__", r"(?<!\\)<[#@t]", r"(?m)^\s*[>#-]"):
        assert not re.search(live, shown), (live, shown)
    assert as_read(shown) == text
    assert "https://gallery.example/g/ab_cd?next=/jobs/x_y" in plain("see https://gallery.example/g/ab_cd?next=/jobs/x_y")
