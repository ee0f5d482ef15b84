"""Search (``q``): a case-insensitive substring match on a note's title and body.

Built only from bound parameters, with LIKE's ``%``, ``_`` and escape character escaped, so
every character of ``q`` matches itself. Case is folded for ASCII letters only, and the same
way on SQLite and PostgreSQL (see ``AsciiLower``); other characters match exactly.

The LIKE condition decides what matches; an index only narrows which notes it is tried on
(migration 0007), so the answer is the same with or without it:
- PostgreSQL: pg_trgm GIN indexes on ``AsciiLower(title)`` and ``AsciiLower(body)`` serve
  the LIKE itself.
- SQLite: ``IndexedCandidates`` adds "the note is among the FTS5 trigram table's hits for
  the same folded text". A trigram index cannot look up fewer than 3 characters (FTS5
  finds nothing for them), so shorter text scans the caller's visible notes: bounded by
  the per-user quota (``BASTION_NOTES_MAX_COUNT``, ``BASTION_NOTES_MAX_BYTES``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Integer,
    Text,
    and_,
    bindparam,
    column,
    literal_column,
    or_,
    select,
    table,
    true,
)
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


TRIGRAM = 3  # the shortest text a trigram index can look up
SQLITE_SEARCH_TABLE = "notes_search"

_fts = table(SQLITE_SEARCH_TABLE, column("rowid", Integer))
_keys = table("note_search_keys", column("id", Integer), column("note_id", Note.id.type))


def fts_phrase(text: str) -> str:
    """``text`` as one FTS5 phrase: inside double quotes every character is literal, and a
    double quote is written twice."""
    return '"' + text.replace('"', '""') + '"'


class IndexedCandidates(ColumnElement[bool]):
    """True for the notes the SQLite FTS5 trigram table finds by the bound ``fts_query``
    (``fts_query(...)``: the ASCII-folded title text in titles or body text in bodies);
    plain ``true`` on other backends, whose LIKE uses its own index. Never the whole
    condition: only a pre-filter. The query is a bound parameter, so the statement is
    compiled once and cached, not per search."""

    type = Boolean()
    _is_implicitly_boolean = True  # a condition already: no "= 1" appended on SQLite
    # No state of its own (the query is a bound parameter), so one cache key for all.
    _traverse_internals = []  # noqa: RUF012 (SQLAlchemy reads it from the class)
    inherit_cache = True


@compiles(IndexedCandidates)
def _candidates_default(_element: IndexedCandidates, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(true(), **kw)


@compiles(IndexedCandidates, "sqlite")
def _candidates_sqlite(_element: IndexedCandidates, compiler: SQLCompiler, **kw: Any) -> str:
    # "notes_search MATCH :query": the table's name stands for all its columns.
    hits = (
        select(_keys.c.note_id)
        .join(_fts, _fts.c.rowid == _keys.c.id)
        .where(literal_column(SQLITE_SEARCH_TABLE).match(bindparam("fts_query", type_=Text())))
    )
    return compiler.process(Note.id.in_(hits), **kw)


def fts_query(*, title: str, body: str) -> str:
    return f"title : {fts_phrase(title)} OR body : {fts_phrase(body)}"


def search_condition(*, indexed: bool) -> ColumnElement[bool]:
    """The search as a condition on bound parameters (``search_parameters``), built once:
    ``indexed`` when the text is long enough for the trigram index."""
    matches = or_(
        AsciiLower(Note.title).like(bindparam("title_pattern", type_=Text()), escape=LIKE_ESCAPE),
        AsciiLower(Note.body).like(bindparam("body_pattern", type_=Text()), escape=LIKE_ESCAPE),
    )
    return and_(IndexedCandidates(), matches) if indexed else matches


def search_parameters(q: str) -> tuple[dict[str, str], bool]:
    """The bound values of ``search_condition`` for ``q``, and whether it is ``indexed``."""
    title_text = q.translate(_ASCII_LOWER)
    body_text = as_stored_html_text(q).translate(_ASCII_LOWER)
    parameters = {
        "title_pattern": like_contains(title_text),
        "body_pattern": like_contains(body_text),
    }
    # The body text is never shorter than the title text (escaping only lengthens it).
    if len(title_text) < TRIGRAM:
        return parameters, False
    parameters["fts_query"] = fts_query(title=title_text, body=body_text)
    return parameters, True
