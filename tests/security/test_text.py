"""The characters text inputs refuse, and the patterns the OpenAPI document states for them,
agree on every code point: a client generated from the document is refused nothing the
document allows, and the document allows nothing the server refuses."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest

from bastion.security.text import (
    LINE_PATTERN,
    TEXT_PATTERN,
    holds_control_character,
    holds_refused_character,
    not_blank_plain_text_pattern,
    plain_text_pattern,
    refuse_formatting_characters,
)

EVERY_CHARACTER = [chr(point) for point in range(sys.maxunicode + 1)]
# Lone surrogates are refused by every check but named by no pattern: a JSON Schema string
# cannot hold one (see bastion.security.text).
TEXT_CHARACTERS = [c for c in EVERY_CHARACTER if unicodedata.category(c) != "Cs"]


def _plain_text_allowed(character: str) -> bool:
    try:
        refuse_formatting_characters(character)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    ("pattern", "allowed"),
    [
        (TEXT_PATTERN, lambda c: not holds_refused_character(c)),
        (LINE_PATTERN, lambda c: not holds_control_character(c)),
        (plain_text_pattern(), _plain_text_allowed),
    ],
    ids=["text", "line", "plain text"],
)
def test_each_pattern_allows_exactly_what_its_check_allows(pattern: str, allowed: object) -> None:
    assert callable(allowed)
    compiled = re.compile(pattern)
    disagreements = [
        f"U+{ord(c):04X}" for c in TEXT_CHARACTERS if bool(compiled.fullmatch(c)) != allowed(c)
    ]
    assert disagreements == []


def test_every_check_refuses_lone_surrogates_and_nul() -> None:
    for character in ("\x00", "\ud800", "\udfff"):
        assert holds_refused_character(f"a{character}b")
        assert not _plain_text_allowed(character)
    assert holds_control_character("a\x00b")


def test_text_keeps_tab_and_line_breaks_and_plain_text_keeps_tab_and_joiners() -> None:
    assert not holds_refused_character("line one\r\nline two\tend")
    assert holds_control_character("a\tb")  # a form field is one line
    assert _plain_text_allowed("\t")
    assert _plain_text_allowed("\u200d")  # the ZWJ of emoji sequences
    for disguise in ("\u202e", "\u200b", "\ufeff", "\n"):
        assert not _plain_text_allowed(disguise)


def test_not_blank_plain_text_needs_one_character_other_than_white_space() -> None:
    pattern = re.compile(not_blank_plain_text_pattern())
    assert pattern.fullmatch(" \tnote ")
    assert pattern.fullmatch("x")
    for blank in ("", " ", "\t \u3000\u00a0"):
        assert not pattern.fullmatch(blank)
    # Every white-space character str.strip() removes is white space to the pattern too.
    space = [c for c in TEXT_CHARACTERS if c.isspace() and _plain_text_allowed(c)]
    assert space
    assert not [c for c in space if pattern.fullmatch(c)]
