"""Planning a story: a script of scenes, or one premise expanded into N scene prompts.

A SCRIPT with several scenes (one per line, or separated by ` | `) is taken as written. A
single premise is expanded: with an OpenAI key by a text model (structured JSON output: a
short "look" that fixes characters, setting, palette and camera, and one prompt per scene),
without one by an offline planner that numbers the premise's beats deterministically.
The look is prepended to every scene prompt so characters and style stay the same.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from bot.config import OpenAISettings
from providers.errors import InvalidRequest, Unavailable

DEFAULT_SCENES = 4
MIN_SCENES = 2

_SPLIT = re.compile(r"\s*(?:\n|\s\|\s)\s*")
_SENTENCE = re.compile(r"(?<=[.!?;])\s+")
#: What the offline planner adds to a premise's beats so each scene reads as a step of a story.
_BEATS = ("opening shot", "the story develops", "a turn of events", "the climax", "the resolution")


class StoryPlan(BaseModel):
    look: str = ""
    scenes: list[str]
    #: Who made it: "script" (as written), "offline", or the text model's id.
    planner: str = "script"

    def prompt(self, k: int) -> str:
        """Scene k's prompt (1-based) with the look in front."""
        scene = self.scenes[k - 1]
        return f"{self.look.rstrip('. ')}. {scene}" if self.look else scene


def split_script(script: str) -> list[str]:
    """The scenes a script lists (one per line or ` | `); one item when it is a premise."""
    return [part.strip() for part in _SPLIT.split(script.strip()) if part.strip()]


def offline_plan(premise: str, scenes: int) -> StoryPlan:
    """Deterministic: the premise's sentences spread over `scenes` numbered beats."""
    premise = " ".join(premise.split())
    sentences = [s for s in _SENTENCE.split(premise) if s] or [premise]
    prompts = []
    for k in range(1, scenes + 1):
        # Sentence i goes to the scene whose share of the premise it falls in; a premise with
        # fewer sentences than scenes repeats its nearest sentence with the next beat.
        sentence = sentences[min(len(sentences) - 1, (k - 1) * len(sentences) // scenes)]
        beat = _beat(k, scenes)
        prompts.append(f"Scene {k} of {scenes}, {beat}: {sentence.rstrip('.')}")
    look = f"Same characters, setting, colour palette and camera style throughout: {sentences[0].rstrip('.')}"
    return StoryPlan(look=look, scenes=prompts, planner="offline")


def _beat(k: int, n: int) -> str:
    if k == 1:
        return _BEATS[0]
    if k == n:
        return _BEATS[-1]
    middle = _BEATS[1:-1]
    return middle[min(len(middle) - 1, (k - 2) * len(middle) // max(1, n - 2))]


class _ModelPlan(BaseModel):
    look: str = Field(min_length=1)
    scenes: list[str] = Field(min_length=1)


def plan_schema(scenes: int) -> dict[str, Any]:
    """The JSON schema the text model must answer in (strict structured outputs)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["look", "scenes"],
        "properties": {
            "look": {
                "type": "string",
                "description": "One or two sentences fixing the characters, setting, colour palette and camera style for every scene.",
            },
            "scenes": {
                "type": "array",
                "minItems": scenes,
                "maxItems": scenes,
                "items": {"type": "string", "description": "What happens in this scene, as a video prompt."},
            },
        },
    }


_SYSTEM = (
    "You plan short multi-scene videos. Given a premise and a number of scenes, answer with a short "
    "'look' (characters with their appearance, setting, colour palette, camera style) that stays the same "
    "in every scene, and one video prompt per scene that continues from the previous scene's last moment. "
    "Do not repeat the look inside the scene prompts."
)


@dataclass
class StoryPlanner:
    """Plans premises with an OpenAI text model when a key is set, else offline."""

    api_key: str | None = None
    base_url: str | None = None
    model: str = "gpt-5-mini"
    timeout: float = 60.0

    @classmethod
    def from_settings(cls, s: OpenAISettings) -> StoryPlanner:
        """Built once by the composition root (bot/app.py) from the OpenAI settings."""
        key = s.api_key.get_secret_value() if s.api_key else None
        return cls(api_key=key, base_url=s.base_url, model=s.text_model, timeout=s.request_timeout_seconds)

    def calls_model(self, script: str) -> bool:
        """Whether planning this script asks the (paid) planner model: a premise, with a key."""
        return bool(self.api_key) and len(split_script(script)) == 1

    def scene_count(self, script: str, scenes: int | None) -> int:
        """How many scenes the plan will have (known before planning)."""
        parts = split_script(script)
        return len(parts) if len(parts) > 1 else (scenes if scenes is not None else DEFAULT_SCENES)

    async def plan(self, script: str, *, scenes: int | None = None, max_scenes: int = 12) -> StoryPlan:
        parts = split_script(script)
        if not parts:
            raise InvalidRequest("The story is empty. Give a premise, or scenes separated by new lines or ' | '.")
        if len(parts) > 1:
            if len(parts) > max_scenes:
                raise InvalidRequest(f"The script has {len(parts)} scenes; a story has at most {max_scenes}.")
            if scenes is not None and scenes != len(parts):
                raise InvalidRequest(f"The script lists {len(parts)} scenes but --scenes says {scenes}; drop one of them.")
            return StoryPlan(scenes=parts, planner="script")
        count = scenes if scenes is not None else DEFAULT_SCENES
        if not MIN_SCENES <= count <= max_scenes:
            raise InvalidRequest(f"A story has {MIN_SCENES} to {max_scenes} scenes; ask for --scenes {min(max(count, MIN_SCENES), max_scenes)}.")
        if not self.api_key:
            return offline_plan(parts[0], count)
        return await self._plan_with_model(parts[0], count)

    async def _plan_with_model(self, premise: str, scenes: int) -> StoryPlan:
        import openai

        from providers.openai_common import make_client

        client = make_client(self.api_key or "", self.base_url, self.timeout)
        try:
            response = await client.chat.completions.create(
                model=self.model,
                messages=[
                    {"role": "system", "content": _SYSTEM},
                    {"role": "user", "content": f"Premise: {premise}\nScenes: {scenes}"},
                ],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "story_plan", "strict": True, "schema": plan_schema(scenes)},
                },
            )
        except openai.APIError as exc:
            raise Unavailable("Planning the story with the text model failed; try again, or list the scenes yourself.",
                              provider="openai", detail=str(exc)) from exc  # fmt: skip
        finally:
            await client.close()
        message = response.choices[0].message
        if getattr(message, "refusal", None):
            raise InvalidRequest(f"The planner refused this premise: {message.refusal}")
        try:
            parsed = _ModelPlan.model_validate(json.loads(message.content or ""))
        except (ValueError, ValidationError) as exc:
            raise Unavailable("The text model's plan was not valid JSON; try again, or list the scenes yourself.",
                              provider="openai", detail=str(exc)) from exc  # fmt: skip
        prompts = [" ".join(s.split()) for s in parsed.scenes if s.strip()][:scenes]
        if len(prompts) < MIN_SCENES:
            raise Unavailable("The text model planned too few scenes; try again.", provider="openai")
        return StoryPlan(look=" ".join(parsed.look.split()), scenes=prompts, planner=response.model or self.model)
