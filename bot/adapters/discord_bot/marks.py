"""How the bot recognises its own posts for a job, so a repeated attempt finds them.

Two marks, both derived from the job id alone (nothing to store before posting):

- a message **nonce** (`vbr-JOBID` for the result, `vbs-JOBID` for a status message).
  discord.py 2.7 sends `enforce_nonce: true` with every nonce, and Discord then answers a
  create that repeats the nonce within a few minutes with the message it already made.
  Only bot-token creates take a nonce; interaction follow-ups (webhook executes) do not.
- the **job id in the message**: the result's attachment is named `JOBID.ext` and its
  buttons' custom ids are `vb:ACTION:JOBID`; a status message's text says `job JOBID` and its
  buttons (Cancel while running, Re-roll after a failure) are `vbs:ACTION:JOBID`. A bot may
  read its own messages' content without the message-content intent, so a scan of the
  channel's recent history finds them after the nonce window, and for follow-ups.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import discord

#: Discord's limit for a string nonce.
NONCE_MAX = 25
#: Newest messages read when looking for an earlier post (one page of Get Channel Messages).
SCAN_LIMIT = 100

_JOB = r"[a-z0-9]{4,32}"
#: Custom-id prefixes: buttons under a result post, and buttons on a status message.
RESULT_PREFIX = "vb"
STATUS_PREFIX = "vbs"
_CUSTOM_ID = re.compile(rf"^(vbs?):[a-z-]+:({_JOB})(?::[1-4])?$")  # `:N`: a set's take (Use N, More like N)
_JOB_IN_TEXT = re.compile(rf"\bjob ({_JOB})\b")


def nonce(kind: str, job_id: str) -> str:
    """`vb` + kind + the job id; a hash of the id if that would pass Discord's 25 characters."""
    prefix = f"vb{kind}-"
    value = prefix + job_id
    if len(value) > NONCE_MAX:
        value = prefix + hashlib.sha256(job_id.encode()).hexdigest()[: NONCE_MAX - len(prefix)]
    return value


def result_nonce(job_id: str) -> str:
    return nonce("r", job_id)


def status_nonce(job_id: str) -> str:
    return nonce("s", job_id)


def custom_ids(message: discord.Message) -> Iterator[str]:
    """Every custom id in the message's components, however deeply nested."""
    stack: list[Any] = list(message.components)
    while stack:
        item = stack.pop()
        custom_id = getattr(item, "custom_id", None)
        if custom_id:
            yield custom_id
        stack.extend(getattr(item, "children", None) or [])


def _attachment_jobs(message: discord.Message) -> set[str]:
    return {a.filename.rsplit(".", 1)[0] for a in message.attachments}


def _button_jobs(message: discord.Message, prefix: str | None = None) -> set[str]:
    found = (_CUSTOM_ID.match(cid) for cid in custom_ids(message))
    return {m.group(2) for m in found if m and (prefix is None or m.group(1) == prefix)}


def is_result_of(message: discord.Message, job_id: str, bot_id: int) -> bool:
    """The bot's result post for this job: its file is named after the job, or its result buttons are."""
    return message.author.id == bot_id and (
        job_id in _attachment_jobs(message) or job_id in _button_jobs(message, RESULT_PREFIX)
    )


def is_status_of(message: discord.Message, job_id: str, bot_id: int) -> bool:
    """The bot's status message for this job: says `job JOBID`, carries no file and no result buttons."""
    if message.author.id != bot_id or message.attachments or _button_jobs(message, RESULT_PREFIX):
        return False
    found = _JOB_IN_TEXT.search(message.content)
    return found is not None and found.group(1) == job_id


def job_id_of(message: discord.Message) -> str | None:
    """The job a bot message belongs to, from its buttons, its file name or its text."""
    for found in (_button_jobs(message), _attachment_jobs(message)):
        ids = {j for j in found if re.fullmatch(_JOB, j)}
        if len(ids) == 1:
            return ids.pop()
    text = _JOB_IN_TEXT.search(message.content)
    return text.group(1) if text else None


async def find_recent(
    channel: discord.PartialMessageable, matches: Callable[[discord.Message], bool], *, after: int | None = None
) -> discord.Message | None:
    """The newest of the channel's last SCAN_LIMIT messages (none older than `after`) that matches."""
    async for message in channel.history(limit=SCAN_LIMIT):
        if after is not None and message.id <= after:
            break  # ids grow with time: everything further back predates what we look for
        if matches(message):
            return message
    return None
