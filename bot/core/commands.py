"""Parsing what users type (`/video a red fox --seconds 8`) into typed commands.

Shared by every adapter that receives text (console, Slack); Discord's typed
options map onto the same models. Flags follow Midjourney's `--name value` style.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field

from bot.core.models import GenerateRequest, JobKind
from bot.core.sizes import normalise_size
from bot.core.stories import StoryRequest
from providers.errors import InvalidRequest

_INT_FLAGS = {"seconds", "seed", "takes"}
_STR_FLAGS = {"size", "pipeline", "model"}
#: Switches: `--audio` alone means on; `--audio=no` off.
_BOOL_FLAGS = {"audio"}
_ALIASES = {"s": "seconds", "duration": "seconds", "ar": "size", "p": "pipeline", "m": "model"}
_ALLOWED = {
    "video": _INT_FLAGS | _STR_FLAGS | _BOOL_FLAGS,
    "image": {"size", "pipeline", "model", "seed", "takes"},
    "extend": {"seconds"},
    "animate": {"seconds"},
    "jobs": {"status", "limit"},
    "story": {"seconds", "seed", "size", "pipeline", "model", "scenes", "transition"},
}
COMMANDS = (
    "video", "image", "jobs", "job", "remix", "extend", "reroll", "animate", "cancel", "delete", "usage", "help", "confirm",
    "decline", "settings", "story", "gallery", "use", "more",
)


class Command(BaseModel):
    name: str
    #: Words that are not flags, in order (the prompt, or a job id then a prompt).
    words: list[str] = Field(default_factory=list)
    flags: dict[str, str] = Field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def job_id(self) -> str:
        if not self.words:
            raise InvalidRequest(f"/{self.name} needs a job id, for example: /{self.name} k3f9x2m1. See /jobs.")
        return self.words[0]

    def rest(self) -> str:
        return " ".join(self.words[1:])

    def int_flag(self, name: str) -> int | None:
        value = self.flags.get(name)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise InvalidRequest(f"--{name} takes a whole number, not '{value}'.") from None

    def generate_request(self) -> GenerateRequest:
        return GenerateRequest(
            prompt=self.text,
            kind=JobKind.IMAGE if self.name == "image" else JobKind.GENERATE,
            pipeline=self.flags.get("pipeline"),
            model=self.flags.get("model"),
            seconds=self.int_flag("seconds"),
            size=self.flags.get("size"),
            seed=self.int_flag("seed"),
            audio=self.flags.get("audio", "no").lower() in ("yes", "true", "on", "1"),
            takes=self.int_flag("takes"),
        )

    def take_number(self) -> int:
        """`/use JOB N`, `/more JOB N`: the take's number after the set's id."""
        if len(self.words) < 2:
            raise InvalidRequest(f"/{self.name} needs a set's job id and a take number, for example: /{self.name} k3f9x2m1 2.")
        try:
            return int(self.words[1])
        except ValueError:
            raise InvalidRequest(f"'{self.words[1]}' is not a take number; give 1 to 4, for example: /{self.name} {self.words[0]} 2.") from None


    def story_request(self) -> StoryRequest:
        """`/story SCENE | SCENE | ...` or `/story PREMISE --scenes N`."""
        transition = (self.flags.get("transition") or "cut").lower()
        if transition not in ("cut", "fade"):
            raise InvalidRequest("--transition is cut or fade.")
        return StoryRequest(
            script=self.text, scenes=self.int_flag("scenes"), seconds=self.int_flag("seconds"), pipeline=self.flags.get("pipeline"),
            model=self.flags.get("model"), size=self.flags.get("size"), seed=self.int_flag("seed"), transition=transition,
        )  # fmt: skip


_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»"}


@dataclass(frozen=True)
class Token:
    text: str
    #: Quoted text is always prompt text, never a flag or a sub-command.
    quoted: bool = False


def tokenize(text: str) -> list[Token]:
    """Words split on whitespace; "double", 'single' and “curly” quotes (what phones type) group
    words into one token, so a quoted prompt may contain `--`."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        close = _QUOTES.get(text[i])
        # An apostrophe inside a word (it's) is not a quote; only one that opens a token is.
        if close is not None:
            end = text.find(close, i + 1)
            if end == -1:
                raise InvalidRequest(f"A quote ({text[i]}) is not closed. Close it, or leave the quotes out.")
            tokens.append(Token(text[i + 1 : end], quoted=True))
            i = end + 1
            continue
        start = i
        while i < n and not text[i].isspace():
            i += 1
        tokens.append(Token(text[start:i]))
    return tokens


def parse_command(text: str, *, default: str | None = None) -> Command:
    """`/video a fox --seconds 8` → Command(name='video', words=['a','fox'], flags={'seconds':'8'}).

    `default` names the command when the text has no leading slash (Slack passes
    `/video`'s text without it): a first word that names another command is that
    command whatever follows (`/video remix k3f9x2m1 at night`); quote the prompt to
    start it with such a word (`/video "cancel culture" documentary`).
    """
    tokens = tokenize(text)
    first = tokens[0] if tokens else None
    if first is not None and not first.quoted and first.text.startswith("/"):
        name = tokens.pop(0).text[1:].lower()
    elif default is not None:
        name = default
        if first is not None and not first.quoted and first.text.lower() in (*COMMANDS, "show") and first.text.lower() != default:
            name = tokens.pop(0).text.lower()  # `/video jobs`, `/video cancel ID`, `/video remix ID a new prompt`
    else:
        raise InvalidRequest("Commands start with /, for example /video a red fox. Type /help.")
    if name == "show":
        name = "job"
    if name not in COMMANDS:
        raise InvalidRequest(f"Unknown command /{name}. Type /help for the list.")
    words: list[str] = []
    flags: dict[str, str] = {}
    allowed = _ALLOWED.get(name, set())
    i = 0
    while i < len(tokens):
        token = tokens[i].text
        if not tokens[i].quoted and token.startswith("--") and len(token) > 2:
            key, _, inline = token[2:].partition("=")
            key = _ALIASES.get(key.lower(), key.lower())
            if key not in allowed:
                options = ", ".join(f"--{f}" for f in sorted(allowed)) or "none"
                raise InvalidRequest(f"/{name} has no option --{key}. Options: {options}.")
            if key in _BOOL_FLAGS:
                value = inline or "yes"
                if value.lower() not in ("yes", "no", "true", "false", "on", "off", "1", "0"):
                    raise InvalidRequest(f"--{key} is a switch: --{key} turns it on, --{key}=no off.")
            elif inline:
                value = inline
            elif i + 1 < len(tokens):
                i += 1
                value = tokens[i].text
            else:
                raise InvalidRequest(f"--{key} needs a value, for example --{key} {_example(key)}.")
            flags[key] = _normalise(key, value)
        else:
            words.append(token)
        i += 1
    return Command(name=name, words=words, flags=flags)


def _example(key: str) -> str:
    return {"seconds": "8", "size": "1280x720", "seed": "42", "pipeline": "local", "model": "sora-2"}.get(key, "…")


def _normalise(key: str, value: str) -> str:
    return normalise_size(value) if key == "size" else value
