"""Search (``q``): a case-insensitive substring match on a note's title and body.

Built only from bound parameters, with LIKE's ``%``, ``_`` and escape character escaped, so
every character of ``q`` matches itself. Case is folded for ASCII letters only, and the same
way on SQLite and PostgreSQL (see ``AsciiLower``); other characters match exactly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Text, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from bastion.storage.tables import Note

LIKE_ESCAPE = "\\"


class AsciiLower(FunctionElement[str]):
    """``lower()`` that folds A-Z only, on every backend.

    SQLite's built-in ``lower()`` folds ASCII only; PostgreSQL's follows the database's
    locale. Under the "C" collation PostgreSQL folds ASCII only too, so the same query
    gives the same answer on both, whatever locale the server was created with.
    """

    type = Text()
    name = "ascii_lower"
    inherit_cache = True


@compiles(AsciiLower)
def _ascii_lower_default(element: AsciiLower, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(AsciiLower, "postgresql")
def _ascii_lower_postgresql(element: AsciiLower, compiler: SQLCompiler, **kw: Any) -> str:
    return f'lower(({compiler.process(element.clauses, **kw)}) COLLATE "C")'


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def like_contains(text: str) -> str:
    """A LIKE pattern (escape ``\\``) matching any string that contains ``text`` literally."""
    escaped = (
        text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )
    return f"%{escaped}%"


def as_stored_html_text(text: str) -> str:
    """``text`` as the sanitizer serialises it inside an HTML text node, so that searching
    the stored body for "Tom & Jerry" finds "Tom &amp; Jerry"."""
    return (
        text.replace("&", "&amp;")
        .replace("\xa0", "&nbsp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def search_condition(q: str) -> ColumnElement[bool]:
    title_pattern = like_contains(q.translate(_ASCII_LOWER))
    body_pattern = like_contains(as_stored_html_text(q).translate(_ASCII_LOWER))
    return or_(
        AsciiLower(Note.title).like(title_pattern, escape=LIKE_ESCAPE),
        AsciiLower(Note.body).like(body_pattern, escape=LIKE_ESCAPE),
    )
