"""Numbers in the server's messages, as the operator wrote them and a client parses them back."""

from __future__ import annotations

import pytest

from videodag_service.wording import counted, first_fault, plain_number, shown_character


@pytest.mark.parametrize(("value", "said"), [
    (12, "12"), (12.0, "12"), (11.999999, "11.999999"), (1234567, "1234567"), (1234567.0, "1234567"),
    (1e-7, "0.0000001"), (2.5, "2.5"), (1e9, "1000000000"), (1e16, "10000000000000000"), (0.25, "0.25"),
])
def test_a_number_is_said_with_every_digit_and_never_in_exponent_form(value: float, said: str) -> None:
    assert plain_number(value) == said
    assert float(said) == value


def test_a_count_of_one_is_singular() -> None:
    assert (counted(1, "video", "videos"), counted(4, "video", "videos")) == ("1 video", "4 videos")


@pytest.mark.parametrize(("text", "fault"), [
    ("", "got 0 characters"), ("abcde", "got 5 characters"), ("ab c", "got ' ' as character 3"),
    ("a\x00", "got U+0000 as character 2"), ("abcd", "got a value of that form"),
])
def test_a_fault_names_the_length_or_the_first_character_outside_the_rule(text: str, fault: str) -> None:
    assert first_fault(text, frozenset("abcd"), most=4) == fault


@pytest.mark.parametrize(("character", "shown"), [
    (" ", "' '"), ("/", "'/'"), ("\\", "'\\'"), ("'", "U+0027"),
    ("\u212a", "'\u212a' (U+212A)"),  # a Kelvin sign, not the K it looks like
    ("\uff21", "'\uff21' (U+FF21)"), ("\u043a", "'\u043a' (U+043A)"),
    ("\u0301", "U+0301"), ("\u200b", "U+200B"), ("\x00", "U+0000"), ("\t", "U+0009"), ("\xa0", "U+00A0"),
])
def test_a_character_that_could_pass_for_another_or_not_show_is_named_by_its_code_point(
    character: str, shown: str
) -> None:
    assert shown_character(character) == shown
