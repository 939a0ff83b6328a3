"""One parser for what users type: quoting, sub-commands whatever follows them, one clear error each."""
from __future__ import annotations

import pytest

from bot.core.commands import parse_command
from providers.errors import InvalidRequest

LONG = "at night with neon reflections on wet asphalt and a slow dolly shot"


def test_sub_commands_are_recognised_whatever_follows() -> None:
    remix = parse_command(f"remix k3f9x2m1 {LONG}", default="video")
    assert remix.name == "remix" and remix.job_id() == "k3f9x2m1" and remix.rest() == LONG
    extend = parse_command(f"extend k3f9x2m1 --seconds 4 {LONG}", default="video")
    assert extend.name == "extend" and extend.int_flag("seconds") == 4 and extend.rest() == LONG
    assert parse_command("show k3f9", default="video").name == "job"
    assert parse_command("reroll k3f9x2m1", default="video").name == "reroll"


def test_a_quoted_prompt_may_contain_dashes_and_command_words() -> None:
    cmd = parse_command('"a -- b --seconds 3 in quotes" --seconds 4', default="video")
    assert cmd.name == "video" and cmd.words == ["a -- b --seconds 3 in quotes"] and cmd.int_flag("seconds") == 4
    cmd = parse_command("“cancel culture” documentary, handheld", default="video")
    assert cmd.name == "video" and cmd.text == "cancel culture documentary, handheld"
    cmd = parse_command("/video 'remix' of an old song --seed 7")
    assert cmd.name == "video" and cmd.text == "remix of an old song" and cmd.int_flag("seed") == 7


def test_apostrophes_inside_words_are_not_quotes() -> None:
    cmd = parse_command("it's a dog's life --seconds 2", default="video")
    assert cmd.text == "it's a dog's life" and cmd.int_flag("seconds") == 2


def test_switches() -> None:
    assert parse_command("a choir --audio", default="video").generate_request().audio is True
    assert parse_command("a choir --audio=no", default="video").generate_request().audio is False
    assert parse_command("a choir", default="video").generate_request().audio is False


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('"an unclosed quote --seconds 4', "is not closed"),
        ("a fox --seconds", "--seconds needs a value"),
        ("a fox --colour red", "/video has no option --colour"),
        ("a fox --audio=maybe", "--audio is a switch"),
        ("remix", None),
    ],
)
def test_each_bad_input_gets_one_error_that_says_what_to_type(text: str, says: str | None) -> None:
    if says is None:
        with pytest.raises(InvalidRequest, match="needs a job id"):
            parse_command(text, default="video").job_id()
        return
    with pytest.raises(InvalidRequest, match=says.replace("-", "\\-")):
        parse_command(text, default="video")
