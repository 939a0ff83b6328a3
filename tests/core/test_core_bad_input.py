"""Every bad input gets a clear error before anything is persisted or billed."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bot.app import App
from bot.core.errors import user_message
from bot.core.models import GenerateRequest, Origin
from providers.errors import InvalidRequest, ModelUnavailable


async def _refused(app: App, request: GenerateRequest, match: str, exc_type: type[Exception] = InvalidRequest) -> None:
    before = await app.store.list(limit=1000)
    with pytest.raises(exc_type) as info:
        await app.service.submit(request, Origin())
    assert match in user_message(info.value)
    assert await app.store.list(limit=1000) == before, "nothing may be persisted"
    media = app.media.root
    assert not any(media.iterdir()), "no files may be written"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompt": ""}, "The prompt is empty"),
        ({"prompt": "   \n "}, "The prompt is empty"),
        ({"prompt": "x" * 1001}, "the limit is 1000"),
        ({"pipeline": "nope"}, "Unknown pipeline 'nope'. Available: "),
        ({"seconds": 0}, "clips of 1 to 20 seconds"),
        ({"seconds": 21}, "clips of 1 to 20 seconds"),
        ({"size": "big"}, "is not WIDTHxHEIGHT"),
        ({"size": "321x180"}, "even sides"),
        ({"size": "8000x8000"}, "even sides"),
    ],
)
async def test_bad_request_is_refused_before_anything_is_stored(app: App, kwargs: dict, match: str) -> None:
    fields = {"prompt": "a quiet harbour", "seconds": 1, "size": "256x144", **kwargs}
    await _refused(app, GenerateRequest(**fields), match)


async def test_unknown_model(app: App) -> None:
    await _refused(app, GenerateRequest(prompt="a harbour", model="sora-9"), "model is unavailable", ModelUnavailable)


async def test_unreadable_missing_and_non_image_inputs(app: App, tmp_path: Path) -> None:
    await _refused(app, GenerateRequest(prompt="animate", image_path=tmp_path / "missing.png"), "Cannot read the image")
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    await _refused(app, GenerateRequest(prompt="animate", image_path=text), "is not an image")
    await _refused(app, GenerateRequest(prompt="animate", image_bytes=b"\x89PNG\r\n\x1a\nbroken", image_name="a.png"), "is not an image")


async def test_too_large_image(app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.service.settings, "max_image_mb", 0.01)
    big = tmp_path / "big.png"
    Image.effect_noise((200, 200), 80).convert("RGB").save(big)
    await _refused(app, GenerateRequest(prompt="animate", image_path=big), "the limit is 0.01 MB")


async def test_other_users_jobs_stay_intact_after_a_refusal(app: App) -> None:
    good = await app.service.submit(GenerateRequest(prompt="a harbour", seconds=1, size="128x72"), Origin(user_id="a"))
    with pytest.raises(InvalidRequest):
        await app.service.submit(GenerateRequest(prompt="", seconds=1), Origin(user_id="b"))
    done = await app.runner.wait(good.id)
    assert done.status.value == "completed" and Path(done.output_path or "").exists()


async def test_remix_of_unknown_or_unfinished_job(app: App) -> None:
    with pytest.raises(Exception, match="No job 'zzzzzzzz'"):
        await app.service.remix("zzzzzzzz", "new prompt", Origin())
    image = await app.service.submit(GenerateRequest(prompt="a still", kind="image", size="128x72"), Origin())
    await app.runner.wait(image.id)
    with pytest.raises(Exception, match="is an image"):
        await app.service.extend(image.id, Origin())


async def test_image_jobs_use_the_default_image_pipeline_setting(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.service.settings, "default_image_pipeline", "no-such-images")
    await _refused(app, GenerateRequest(prompt="a still", kind="image"), "Unknown pipeline 'no-such-images'")
