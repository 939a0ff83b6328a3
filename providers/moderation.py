"""Checking a prompt (and its input images) before any paid step.

A `Moderator` answers one question, "may this be sent?", as a `ModerationVerdict`. It holds no
policy: what a flagged verdict or an outage means for a job (reject, fail open or closed) is the
core's decision. Three kinds:

- `OpenAIModerator`: OpenAI's moderation endpoint (free; `omni-moderation-*` also takes images).
- `BlocklistModerator`: a word list, for every mode and as the fallback without an OpenAI key.
- `CombinedModerator`: the cheap blocklist first, then the rest; the first flag wins.
"""
from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import openai
from PIL import Image
from pydantic import BaseModel

from providers.errors import InvalidRequest, NotConfigured, TransientError, Unavailable
from providers.input_images import open_image, probe
from providers.openai_common import make_client, reraise
from providers.polling import PollPolicy, retrying

#: The long side an image is scaled down to before it is sent: the classifier needs no more,
#: and a phone photo as a data URI would be megabytes per check.
MAX_IMAGE_SIDE = 1024
log = logging.getLogger(__name__)


class ModerationVerdict(BaseModel):
    flagged: bool
    #: Flagged category names, sorted: e.g. ["violence", "violence/graphic"] or ["blocklist: <word>"].
    categories: list[str] = []
    #: Highest score seen per category (OpenAI only; the blocklist has none).
    scores: dict[str, float] = {}
    #: Who decided: "openai:<model>" or "blocklist".
    source: str


class Moderator(ABC):
    name: str = "moderator"

    @abstractmethod
    async def check(self, text: str, images: Sequence[Path] = ()) -> ModerationVerdict:
        """The verdict on `text` with `images`; raises a taxonomy error when it cannot tell
        (`Unavailable` for an outage, `NotConfigured` for a rejected key)."""

    async def aclose(self) -> None:
        return None


# --- OpenAI -----------------------------------------------------------------------------------


class OpenAIModerator(Moderator):
    """`POST /v1/moderations`: one request per check carrying the text and every image.

    A check creates nothing and costs nothing, so transient failures (5xx, 429, a dropped
    connection) are retried here; what outlives the retries is raised as `Unavailable` for the
    core's fail-open/closed rule.
    """

    #: Retries of one check: a user is waiting for the answer, so few and short.
    attempts = 3
    policy = PollPolicy(backoff_base=0.5, backoff_max=4.0)

    def __init__(self, *, api_key: str, base_url: str | None = None, model: str = "omni-moderation-latest", timeout: float = 20.0) -> None:
        self.model = model
        self.name = f"openai:{model}"
        self._api_key = api_key
        self._base_url = base_url
        self._timeout = timeout
        self._client: openai.AsyncOpenAI | None = None

    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            if not self._api_key:
                raise NotConfigured("Moderation is not configured.", provider=self.name, detail="no OpenAI API key for moderation")
            self._client = make_client(self._api_key, self._base_url, self._timeout)
        return self._client

    async def check(self, text: str, images: Sequence[Path] = ()) -> ModerationVerdict:
        inputs: list[dict[str, Any]] = []
        if text.strip() or not images:
            inputs.append({"type": "text", "text": text})
        for path in images:
            url = await asyncio.to_thread(image_data_uri, Path(path))
            inputs.append({"type": "image_url", "image_url": {"url": url}})
        if not images and not text.strip():
            return ModerationVerdict(flagged=False, source=self.name)  # nothing to judge
        client = self.client

        async def call() -> Any:
            try:
                return await client.moderations.create(model=self.model, input=inputs)  # type: ignore[arg-type]
            except Exception as exc:
                reraise(exc, provider=self.name, what="moderations.create")

        try:
            response = await retrying(call, policy=self.policy, attempts=self.attempts, what="moderations.create")
        except TransientError as exc:  # `retrying` hands a last 429 back as is: for us it is an outage too
            raise Unavailable(
                "The moderation service is not answering; try again later.", provider=self.name,
                detail=f"moderations.create: {self.attempts} attempts, last: {exc.detail or exc}",
            ) from exc  # fmt: skip
        except Unavailable as exc:
            if exc.provider is None:
                exc.provider = self.name
            raise
        return self._verdict(response)

    def _verdict(self, response: Any) -> ModerationVerdict:
        """Every result merged: flagged if any is, each flagged category once, the top score of each."""
        flagged = False
        categories: set[str] = set()
        scores: dict[str, float] = {}
        for result in response.results or ():
            flagged = flagged or bool(result.flagged)
            for name, hit in result.categories.model_dump(by_alias=True).items():
                if hit is True:
                    categories.add(name)
            for name, score in result.category_scores.model_dump(by_alias=True).items():
                if isinstance(score, (int, float)) and not isinstance(score, bool):
                    scores[name] = max(float(score), scores.get(name, float("-inf")))
        return ModerationVerdict(flagged=flagged, categories=sorted(categories), scores=scores, source=self.name)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def image_data_uri(path: Path, max_side: int = MAX_IMAGE_SIDE) -> str:
    """The image as a PNG or JPEG data URI, at most `max_side` px on its long side.

    A small, upright PNG or JPEG is sent as it is; anything else is decoded, turned upright and
    re-encoded (JPEG stays JPEG, everything else becomes lossless PNG). Blocking: run in a thread.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"Cannot read the image '{path.name}'.") from exc
    header = probe(data, name=path.name)  # allowed formats and the pixel ceiling, from the header
    if header.format in ("PNG", "JPEG") and not header.turned and max(header.width, header.height) <= max_side:
        return _data_uri(data, header.format)
    image = open_image(data, name=path.name)  # upright RGB
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    fmt = "JPEG" if header.format == "JPEG" else "PNG"
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=90)
    else:
        image.save(out, "PNG")
    return _data_uri(out.getvalue(), fmt)


def _data_uri(data: bytes, fmt: str) -> str:
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# --- blocklist --------------------------------------------------------------------------------

#: The simple leetspeak the blocklist sees through.
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "@": "a", "$": "s"})
_PUNCT = re.compile(r"[^\w\s]|_")
#: Runs of single characters separated by spaces ("k i l l"), after punctuation became spaces.
_SPELLED = re.compile(r"(?<!\S)\w(?: \w)+(?!\S)")


def _fold(text: str) -> str:
    """Lower case without accents, invisible characters or leetspeak."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(ch for ch in decomposed if not unicodedata.combining(ch) and unicodedata.category(ch) != "Cf")
    return kept.casefold().translate(_LEET)


def _variants(text: str) -> set[str]:
    """The ways the text may be read: punctuation as a space ("bad-word" -> "bad word"), punctuation
    dropped ("a.s.s" -> "ass"), and spelled-out letters joined ("k i l l" -> "kill")."""
    folded = _fold(text)
    spaced = " ".join(_PUNCT.sub(" ", folded).split())
    joined = " ".join(_PUNCT.sub("", folded).split())
    spelled = _SPELLED.sub(lambda m: m.group().replace(" ", ""), spaced)
    return {spaced, joined, spelled}


class BlocklistModerator(Moderator):
    """Case-insensitive whole-word (or whole-phrase) matching; an empty list never flags."""

    name = "blocklist"

    def __init__(self, words: Iterable[str]) -> None:
        self.words: tuple[str, ...] = tuple(dict.fromkeys(w.strip() for w in words if w and w.strip()))
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for word in self.words:
            forms = {form for form in _variants(word) if form}
            if forms:
                alternatives = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
                self._patterns.append((word, re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")))

    async def check(self, text: str, images: Sequence[Path] = ()) -> ModerationVerdict:
        hits = self.matches(text)
        return ModerationVerdict(flagged=bool(hits), categories=[f"blocklist: {w}" for w in hits], source=self.name)

    def matches(self, text: str) -> list[str]:
        """The listed words and phrases found in `text`, sorted."""
        if not self._patterns or not text:
            return []
        readings = _variants(text)
        return sorted({word for word, pattern in self._patterns if any(pattern.search(r) for r in readings)})


# --- both -------------------------------------------------------------------------------------


class CombinedModerator(Moderator):
    """Several moderators in turn, blocklists first (cheap, offline, always applied): the first
    flagged verdict is the answer and the rest are not asked. A clean answer is the last one's
    (it carries the scores)."""

    def __init__(self, *parts: Moderator) -> None:
        # Stable: among blocklists, and among the others, the given order is kept.
        self.parts: tuple[Moderator, ...] = tuple(sorted(parts, key=lambda p: not isinstance(p, BlocklistModerator)))
        self.name = "+".join(p.name for p in self.parts) or "none"

    async def check(self, text: str, images: Sequence[Path] = ()) -> ModerationVerdict:
        verdict = ModerationVerdict(flagged=False, source=self.name)
        for part in self.parts:
            verdict = await part.check(text, images)
            if verdict.flagged:
                return verdict
        return verdict

    async def aclose(self) -> None:
        for part in self.parts:  # one failing to close must not leave the others open
            try:
                await part.aclose()
            except Exception:
                log.warning("closing moderator %s failed", part.name, exc_info=True)
