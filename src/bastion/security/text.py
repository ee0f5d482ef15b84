"""Which characters a text input may hold, as one check and as the pattern documenting it.

Every text input is refused at the edge if it holds a control character: C0 (NUL
included) but tab, line feed and carriage return, DEL, C1, or a lone surrogate (a JSON
``"\\ud800"`` escape decodes to one; it is not Unicode text and no database driver can
encode it). NUL alone was a 500 on PostgreSQL, which refuses it in text; the others only
serve to corrupt logs and disguise text. Plain text (a note's title, a search) refuses
more: every control and format character but tab and the two joiners, so a title cannot
hide behind a bidi override or a zero-width space.

Each check has a pattern, built from the same definition of the characters, that the
OpenAPI document states: a client generated from the document knows exactly what is
refused, and ``tests/security/test_text.py`` holds the two equal over every code point.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# Unicode fixes the control characters (category Cc) for good: C0, DEL and C1. Of them,
# text keeps tab, line feed and carriage return.
_TEXT_REFUSED = "\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F"
# Joiners shape emoji sequences and Indic and Persian scripts; every other format
# character (bidi overrides, zero-width space) only serves to disguise text.
_PLAIN_TEXT_ALLOWED = frozenset({"\t", "\u200c", "\u200d"})
_PLAIN_TEXT_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})

# Lone surrogates are refused too, but the patterns do not name them: they are not Unicode
# text, so a JSON Schema string cannot hold one, and regular-expression engines that
# work on code points (Rust's, which schemathesis validates with) refuse them in a class.
_SURROGATES = "\\uD800-\\uDFFF"
TEXT_PATTERN = f"^[^{_TEXT_REFUSED}]*$"
_TEXT_REFUSAL = re.compile(f"[{_TEXT_REFUSED}{_SURROGATES}]")
# A one-line value (a form field of RFC 6749: a username, a password, a token, a scope)
# holds no control character at all.
_LINE_REFUSED = "\\u0000-\\u001F\\u007F-\\u009F"
LINE_PATTERN = f"^[^{_LINE_REFUSED}]*$"
_LINE_REFUSAL = re.compile(f"[{_LINE_REFUSED}]")

TEXT_REFUSED_MESSAGE = "Text must not contain control characters."
PLAIN_TEXT_REFUSED_MESSAGE = "Text must not contain control or formatting characters."


def holds_refused_character(value: str) -> bool:
    """Whether ``value`` holds a character no text input may hold."""
    return _TEXT_REFUSAL.search(value) is not None


def holds_control_character(value: str) -> bool:
    """Whether ``value`` holds any control character, tab and line breaks included."""
    return _LINE_REFUSAL.search(value) is not None


def refuse_control_characters(value: str) -> str:
    if _TEXT_REFUSAL.search(value):
        raise ValueError(TEXT_REFUSED_MESSAGE)
    return value


def _is_refused_in_plain_text(character: str) -> bool:
    return (
        unicodedata.category(character) in _PLAIN_TEXT_REFUSED_CATEGORIES
        and character not in _PLAIN_TEXT_ALLOWED
    )


def refuse_formatting_characters(value: str) -> str:
    # By category rather than by a class of code points: the format characters grow with
    # each Unicode version, and the check must follow the interpreter's tables.
    if any(_is_refused_in_plain_text(character) for character in value):
        raise ValueError(PLAIN_TEXT_REFUSED_MESSAGE)
    return value


def _code_point_ranges(points: Iterable[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for point in points:
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1] = (ranges[-1][0], point)
        else:
            ranges.append((point, point))
    return ranges


def _escaped(point: int) -> str:
    # \\uXXXX reads the same in Python's re, in ECMA-262 (JSON Schema's dialect) and in
    # Rust's regex; written out, a class of controls would be unprintable. Above the BMP the
    # three disagree on escapes, but all read the character itself (ECMA-262 with its
    # "u" flag).
    return f"\\u{point:04X}" if point <= 0xFFFF else chr(point)


def _members(points: Iterable[int]) -> str:
    """The inside of a regular-expression class holding exactly ``points``."""
    return "".join(
        _escaped(first) if first == last else f"{_escaped(first)}-{_escaped(last)}"
        for first, last in _code_point_ranges(points)
    )


@functools.cache
def _plain_text_classes() -> tuple[str, str]:
    """(refused, white space) as class members, from this interpreter's Unicode tables.
    One pass over every code point (a quarter of a second), made only when the OpenAPI
    document is."""
    refused: list[int] = []
    space: list[int] = []
    for point in range(sys.maxunicode + 1):
        character = chr(point)
        if unicodedata.category(character) == "Cs":
            continue  # not text at all; see _SURROGATES
        if _is_refused_in_plain_text(character):
            refused.append(point)
        elif character.isspace():
            space.append(point)
    return _members(refused), _members(space)


def plain_text_pattern() -> str:
    refused, _ = _plain_text_classes()
    return f"^[^{refused}]*$"


def not_blank_plain_text_pattern() -> str:
    """Plain text with at least one character that is not white space (a title)."""
    refused, space = _plain_text_classes()
    return f"^[^{refused}]*[^{refused}{space}][^{refused}]*$"


@dataclass(frozen=True, slots=True)
class DocumentedPattern:
    """``Annotated`` metadata: the JSON Schema ``pattern`` of what a validator enforces, for
    a check that is clearer as code than as a regular expression (and whose message says
    what is wrong, not which pattern failed). ``pattern`` is called when the document is
    made, so a costly one costs nothing at import."""

    pattern: Callable[[], str]

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = self.pattern()
        return schema
