"""The message shortcut "Animate with videobot": a video from the image in a message.

On one of the bot's own image results it is the core's Animate on that job. On anyone
else's message with an image file, the file is downloaded with the bot token (only from
Slack's own file host: an external file is refused) and handed to the core as an
image-to-video request (the core checks the size and that it is an image), and the job runs
in that message's thread.
"""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from yarl import URL

from bot.adapters.slack.blocks import ANIMATE_SHORTCUT, unesc
from bot.adapters.slack.flows import Tell, act, respond_teller, show_job
from bot.core.models import GenerateRequest
from bot.core.views import Action
from bot.core.errors import InvalidRequest

if TYPE_CHECKING:
    from bot.adapters.slack.host import SlackHost

#: The prompt when the message has no text of its own.
DEFAULT_PROMPT = "the scene comes to life with gentle, natural motion"
CHUNK = 1 << 16


def register(bolt: AsyncApp, adapter: SlackHost) -> None:
    async def animate(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        adapter.later(on_animate(adapter, body, respond_teller(respond)), "slack-shortcut")

    bolt.shortcut({"type": "message_action", "callback_id": ANIMATE_SHORTCUT})(animate)


async def on_animate(adapter: SlackHost, body: dict[str, Any], tell: Tell) -> None:
    message = body.get("message") or {}
    channel, user = str(body["channel"]["id"]), body["user"]
    ts = str(message.get("ts") or body.get("message_ts"))
    thread = str(message.get("thread_ts") or ts)  # the new job's card goes in the message's thread
    author = message.get("user")
    team_id = user.get("team_id") or (body.get("team") or {}).get("id")
    job = await adapter.surface.job_for_message(channel, ts, str(author) if author else None, team_id)
    if job is not None:
        # One of the bot's results: the core says what Animate means for it (a video is refused with a hint).
        await act(adapter, Action.ANIMATE, job.id, user=user, channel=channel, tell=tell, thread_ts=thread)
        return
    try:
        client = await adapter.client_for(team_id)
        file = await _image_file(client, message)
        if file is None:
            await tell("There is no image in this message. Use Animate with videobot on a message with a picture.")
            return
        data = await _download(adapter, client, file)
        text = unesc(str(message.get("text") or "")).strip()
        request = GenerateRequest(prompt=text or DEFAULT_PROMPT, image_bytes=data, image_name=str(file.get("name") or "image"))
        origin = adapter.origin_for(user.get("team_id") or (body.get("team") or {}).get("id"), channel, str(user["id"]), user.get("username") or user.get("name"))
        origin.extra["thread_ts"] = thread
        job = await adapter.service.submit(request, origin)
    except Exception as exc:
        await tell.refusal(exc)
        return
    await show_job(adapter, job, tell)


async def _image_file(client: AsyncWebClient, message: dict[str, Any]) -> dict[str, Any] | None:
    for file in message.get("files") or []:
        if file.get("file_access") == "check_file_info" or "mimetype" not in file:
            file = dict((await client.files_info(file=file["id"]))["file"])
        if str(file.get("mimetype", "")).startswith("image/"):
            return file
    return None


NOT_UPLOADED = (
    "That image is not a file uploaded to Slack (it links somewhere else), so I will not fetch it. "
    "Upload the image itself to Slack, then use Animate with videobot on that message."
)


def file_origins(api_url: str) -> frozenset[URL]:
    """Where a file's bytes may be fetched with the bot token: Slack's file host over HTTPS, and
    for a configured Web API base (GovSlack, a proxy, the tests' emulator) its own origin and
    its `files.` host."""
    origins = {URL("https://files.slack.com")}
    api = URL(api_url)
    if api.host and api.origin() != URL(AsyncWebClient.BASE_URL).origin():
        origins.add(api.origin())
        if not _is_address(api.host):
            origins.add(URL.build(scheme="https", host=f"files.{api.host}"))
    return frozenset(origins)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def file_url(file: dict[str, Any], api_url: str) -> str:
    """The address to download `file` from with the bot token, or why not: an external file (a
    link to Google Drive, Dropbox...) or one whose address is not Slack's file host would send
    the token to someone else."""
    url = file.get("url_private_download") or file.get("url_private")
    if file.get("is_external"):
        raise InvalidRequest(NOT_UPLOADED)
    if not url:
        raise InvalidRequest("Slack gave no address for this image. Try uploading it again.")
    try:
        parsed = URL(str(url))
        origin = parsed.origin()
    except ValueError:
        raise InvalidRequest(NOT_UPLOADED) from None
    if parsed.user or parsed.password or origin not in file_origins(api_url):
        raise InvalidRequest(NOT_UPLOADED)
    return str(url)


async def _download(adapter: SlackHost, client: AsyncWebClient, file: dict[str, Any]) -> bytes:
    """The file's bytes with the bot token, read no further than just past the core's image limit
    (the core checks what arrives: its size, that it is an image). aiohttp drops the token on a
    redirect to another origin."""
    url = file_url(file, client.base_url)
    limit = int(adapter.service.settings.max_image_mb * 1_000_000)
    size = int(file.get("size") or 0)
    if size > limit:
        # SHIM (issue 10): the core's own refusal, worded as JobService._load_image words it, for a
        # file not worth downloading; wanted from the core: a size check callable before the bytes exist.
        raise InvalidRequest(f"The image is {size / 1e6:.1f} MB; the limit is {limit / 1e6:g} MB. Send a smaller one.")
    cap = limit + 1
    session = client.session
    assert session is not None
    async with session.get(str(url), headers={"Authorization": f"Bearer {client.token}"}) as response:
        if response.status != 200 or response.content_type.startswith("text/html"):
            # A login page instead of the file: the token may not read files here.
            raise InvalidRequest("I could not download that image. Invite me to this channel, then try again.")
        data = bytearray()
        async for chunk in response.content.iter_chunked(CHUNK):
            data += chunk
            if len(data) >= cap:
                break
    return bytes(data)
