"""Moderation providers: the real openai SDK against the emulator's /v1/moderations, the word
blocklist, and the two combined."""
from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from PIL import Image

from providers.errors import InvalidRequest, NotConfigured, ProviderInvalidRequest, TransientError, Unavailable
from providers.moderation import BlocklistModerator, CombinedModerator, ModerationVerdict, OpenAIModerator
from providers.polling import PollPolicy
from tests.fakes.openai_server import MODERATION_CATEGORIES, OpenAIEmulator

MAGENTA = (255, 0, 255)


@pytest.fixture
async def moderator(openai_server: OpenAIEmulator) -> AsyncIterator[OpenAIModerator]:
    m = OpenAIModerator(api_key=openai_server.api_key, base_url=openai_server.base_url)
    m.policy = PollPolicy(backoff_base=0.01, backoff_max=0.02)  # the retries, without the waiting
    try:
        yield m
    finally:
        await m.aclose()


def _image(path: Path, size: tuple[int, int], color: tuple[int, int, int] = MAGENTA, fmt: str = "PNG") -> Path:
    Image.new("RGB", size, color).save(path, fmt)
    return path


def _data(url: str) -> tuple[str, bytes]:
    head, b64 = url.split(",", 1)
    return head, base64.b64decode(b64)


# --- OpenAI -----------------------------------------------------------------------------------


async def test_clean_text_passes_with_all_scores(moderator: OpenAIModerator, openai_server: OpenAIEmulator) -> None:
    verdict = await moderator.check("a red kite over the dunes at dawn")
    assert verdict == ModerationVerdict(flagged=False, categories=[], scores=verdict.scores, source="openai:omni-moderation-latest")
    assert set(verdict.scores) == set(MODERATION_CATEGORIES) and max(verdict.scores.values()) < 0.01
    (call,) = openai_server.calls("moderations")
    assert call.path == "/v1/moderations" and call.headers["authorization"] == f"Bearer {openai_server.api_key}"
    assert call.fields == {"model": "omni-moderation-latest", "input": [{"type": "text", "text": "a red kite over the dunes at dawn"}]}


async def test_flagged_text_names_its_categories(moderator: OpenAIModerator, openai_server: OpenAIEmulator) -> None:
    verdict = await moderator.check("Gore in every frame, then they KILL the hero")
    assert verdict.flagged
    assert verdict.categories == ["violence", "violence/graphic"]
    assert verdict.scores["violence"] == pytest.approx(0.97) and verdict.scores["sexual"] < 0.01
    assert openai_server.moderations[-1].flagged == [["violence", "violence/graphic"]]


async def test_flagged_image_is_caught_with_clean_text(moderator: OpenAIModerator, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    picture = _image(tmp_path / "in.png", (64, 48))
    verdict = await moderator.check("a calm lake", [picture])
    assert verdict.flagged and verdict.categories == ["sexual"]
    # One request carrying exactly one text and one image, the image as a PNG data URI of the file.
    (call,) = openai_server.calls("moderations")
    text, image = call.fields["input"]
    assert text == {"type": "text", "text": "a calm lake"}
    assert image["type"] == "image_url" and set(image) == {"type", "image_url"}
    head, data = _data(image["image_url"]["url"])
    assert head == "data:image/png;base64" and data == picture.read_bytes()
    (seen,) = openai_server.moderations
    assert [i["type"] for i in seen.inputs] == ["text", "image"] and seen.inputs[1]["magenta"] == 1.0


async def test_a_mostly_magenta_image_below_the_threshold_passes(moderator: OpenAIModerator, tmp_path: Path) -> None:
    image = Image.new("RGB", (100, 100), MAGENTA)
    image.paste((0, 0, 0), (0, 0, 100, 11))  # 89 % magenta
    image.save(tmp_path / "almost.png")
    assert not (await moderator.check("a calm lake", [tmp_path / "almost.png"])).flagged


async def test_large_images_are_downscaled_before_sending(moderator: OpenAIModerator, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    big_png = _image(tmp_path / "big.png", (3000, 2000))
    big_jpeg = _image(tmp_path / "big.jpg", (1200, 2400), (20, 120, 40), "JPEG")
    small_jpeg = _image(tmp_path / "small.jpg", (640, 480), (20, 120, 40), "JPEG")
    verdict = await moderator.check("", [big_png, big_jpeg, small_jpeg])
    assert verdict.flagged and verdict.categories == ["sexual"]  # still magenta after scaling
    (seen,) = openai_server.moderations
    # No empty text input when there is nothing to say; every image in the one request.
    assert [(i["format"], i["width"], i["height"]) for i in seen.inputs] == [("PNG", 1024, 683), ("JPEG", 512, 1024), ("JPEG", 640, 480)]
    (call,) = openai_server.calls("moderations")
    assert _data(call.fields["input"][2]["image_url"]["url"]) == ("data:image/jpeg;base64", small_jpeg.read_bytes())


async def test_other_formats_and_rotated_photos_are_reencoded(moderator: OpenAIModerator, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    webp = _image(tmp_path / "in.webp", (80, 40), fmt="WEBP")
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    Image.new("RGB", (80, 40), (10, 10, 10)).save(rotated, "JPEG", exif=exif)
    await moderator.check("a calm lake", [webp, rotated])
    _, png, jpeg = openai_server.moderations[0].inputs
    assert (png["mime"], png["format"], png["width"], png["height"]) == ("image/png", "PNG", 80, 40)
    assert (jpeg["mime"], jpeg["format"], jpeg["width"], jpeg["height"]) == ("image/jpeg", "JPEG", 40, 80)


async def test_unreadable_image_is_refused_before_any_request(moderator: OpenAIModerator, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    bogus = tmp_path / "not.png"
    bogus.write_bytes(b"no image here")
    with pytest.raises(InvalidRequest, match="not an image"):
        await moderator.check("a calm lake", [bogus])
    assert openai_server.calls("moderations") == []


async def test_a_blip_is_retried(moderator: OpenAIModerator, openai_server: OpenAIEmulator) -> None:
    openai_server.fail("moderations", 502)
    openai_server.drop("moderations")
    verdict = await moderator.check("they kill the lights")
    assert verdict.categories == ["violence"]
    assert len(openai_server.calls("moderations")) == 3


@pytest.mark.parametrize("status", [500, 429])
async def test_an_outage_is_unavailable_after_retries(moderator: OpenAIModerator, openai_server: OpenAIEmulator, status: int) -> None:
    openai_server.fail("moderations", status, code="rate_limit_exceeded" if status == 429 else None, times=10, headers={"retry-after-ms": "10"})
    with pytest.raises(Unavailable) as caught:
        await moderator.check("a calm lake")
    assert not isinstance(caught.value, (NotConfigured, TransientError))
    assert caught.value.provider == "openai:omni-moderation-latest"
    assert len(openai_server.calls("moderations")) == moderator.attempts == 3


async def test_rejected_key_is_not_configured_and_not_retried(openai_server: OpenAIEmulator) -> None:
    wrong = OpenAIModerator(api_key="sk-wrong", base_url=openai_server.base_url)
    try:
        with pytest.raises(NotConfigured):
            await wrong.check("a calm lake")
    finally:
        await wrong.aclose()
    assert len(openai_server.calls("moderations")) == 1
    assert openai_server.moderations == []


async def test_forbidden_is_not_configured(moderator: OpenAIModerator, openai_server: OpenAIEmulator) -> None:
    openai_server.fail("moderations", 403, code="unsupported_country_region_territory")
    with pytest.raises(NotConfigured):
        await moderator.check("a calm lake")
    assert len(openai_server.calls("moderations")) == 1


async def test_no_key_is_not_configured_without_a_request(openai_server: OpenAIEmulator) -> None:
    with pytest.raises(NotConfigured):
        await OpenAIModerator(api_key="", base_url=openai_server.base_url).check("a calm lake")
    assert openai_server.calls("moderations") == []


async def test_emulator_speaks_every_input_form(openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    client = openai.AsyncOpenAI(api_key=openai_server.api_key, base_url=openai_server.base_url, max_retries=0)
    try:
        single = await client.moderations.create(input="hateword")
        assert single.model == "omni-moderation-latest" and single.id.startswith("modr-")
        assert single.results[0].categories.hate and single.results[0].category_applied_input_types.hate == ["text"]
        many = await client.moderations.create(input=["fine", "gore"], model="text-moderation-latest")
        assert [r.flagged for r in many.results] == [False, True]
        png = io.BytesIO()
        Image.new("RGB", (8, 8), MAGENTA).save(png, "PNG")
        url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
        with pytest.raises(openai.BadRequestError, match="does not support image"):
            await client.moderations.create(input=[{"type": "image_url", "image_url": {"url": url}}], model="text-moderation-latest")
        only_image = await client.moderations.create(input=[{"type": "image_url", "image_url": {"url": url}}])
        (result,) = only_image.results
        assert result.categories.sexual and result.category_applied_input_types.sexual == ["image"]
        assert result.category_applied_input_types.hate == []
        with pytest.raises(openai.BadRequestError, match="download"):
            await client.moderations.create(input=[{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    finally:
        await client.close()


async def test_model_not_found_surfaces_as_unavailable(openai_server: OpenAIEmulator) -> None:
    m = OpenAIModerator(api_key=openai_server.api_key, base_url=openai_server.base_url, model="omni-moderation-1999")
    try:
        with pytest.raises(Unavailable):
            await m.check("a calm lake")
    finally:
        await m.aclose()


async def test_bad_request_is_the_providers_refusal(moderator: OpenAIModerator, openai_server: OpenAIEmulator) -> None:
    openai_server.fail("moderations", 400, code="invalid_value", param="input", message="Invalid image.")
    with pytest.raises(ProviderInvalidRequest):
        await moderator.check("a calm lake")


# --- blocklist --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hits"),
    [
        ("What an ASS!", ["ass"]),
        ("what an a$$", ["ass"]),
        ("what an @ss", ["ass"]),
        ("what an a.s.s", ["ass"]),
        ("what an a s s", ["ass"]),
        ("a classic bass assassin passes", []),  # whole words only
        ("asses", []),
        ("sp1d3r venom", ["Spider Venom"]),
        ("SPIDER---venom!", ["Spider Venom"]),
        ("spider, and venom", []),
        ("spidervenom", []),
        ("k\u200bill, or kíll", ["kill"]),
        ("h4x0r", ["h4x0r"]),
        ("haxor", ["h4x0r"]),  # listed leetspeak matches plain, and the other way round
        ("k1ll the ass", ["ass", "kill"]),
    ],
)
async def test_blocklist_matching(text: str, hits: list[str]) -> None:
    blocklist = BlocklistModerator(["ass", "Spider Venom", "kill", "h4x0r", "", "  ", "!!!"])
    verdict = await blocklist.check(text)
    assert verdict == ModerationVerdict(flagged=bool(hits), categories=[f"blocklist: {w}" for w in hits], source="blocklist")


async def test_empty_blocklist_never_flags() -> None:
    assert not (await BlocklistModerator([]).check("ass kill gore")).flagged
    assert not (await BlocklistModerator(["", "  ", "?!"]).check("?! anything")).flagged


# --- combined ---------------------------------------------------------------------------------


async def test_combined_blocklist_hit_short_circuits(moderator: OpenAIModerator, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    picture = _image(tmp_path / "in.png", (16, 16))
    combined = CombinedModerator(moderator, BlocklistModerator(["dragon"]))  # blocklist runs first anyway
    assert combined.name == "blocklist+openai:omni-moderation-latest"
    verdict = await combined.check("A DRAGON eats the moon", [picture])
    assert verdict == ModerationVerdict(flagged=True, categories=["blocklist: dragon"], source="blocklist")
    assert openai_server.calls("moderations") == []


async def test_combined_asks_openai_when_the_blocklist_passes(moderator: OpenAIModerator, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    combined = CombinedModerator(BlocklistModerator(["dragon"]), moderator)
    clean = await combined.check("a calm lake")
    assert not clean.flagged and clean.source == "openai:omni-moderation-latest" and clean.scores
    flagged = await combined.check("a calm lake", [_image(tmp_path / "in.png", (16, 16))])
    assert flagged.flagged and flagged.categories == ["sexual"] and flagged.source == "openai:omni-moderation-latest"
    assert len(openai_server.calls("moderations")) == 2
    openai_server.fail("moderations", 500, times=10)
    with pytest.raises(Unavailable):  # an outage is the caller's to judge, not a pass
        await combined.check("a calm lake")
    await combined.aclose()
