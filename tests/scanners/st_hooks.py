"""Schemathesis hooks, loaded by the schemathesis process itself (``hooks`` in its config).

One hook: every request the fuzzer means to be valid carries an ``Idempotency-Key`` of its
own. The key is the client's promise that two requests with it are the same request, and the
IETF draft makes the server hold it to that: the same key with another body is a 422, the
same key with the same body answers the first response again. A fuzzer draws keys from a small
space ("0", "00", ...) and so breaks the promise all the time; schemathesis then reports the
server keeping it, as "schema-valid request rejected" (the 422) or "created resource not
found" (a replayed 201 for a note deleted since). Replays and conflicts have tests of their own
(tests/notes/test_idempotency.py, tests/e2e/test_idempotency.py).

The generated key keeps its shape, only made unique: a suffix replaces its tail (inside the
quotes of a quoted key), so a long or quoted key is still sent long or quoted. Keys of
negative cases are left alone: refusing a malformed key is what those cases test, and a
refused key is never stored, so it cannot collide.
"""

from __future__ import annotations

import itertools
from collections.abc import MutableMapping
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

HEADER = "idempotency-key"
MAX_KEY = 255
_serial = itertools.count(1)


def unique_key(key: str, serial: int) -> str:
    """``key`` with a tail of its own: the same length (or the suffix's, if longer) and the
    same quoting, so a key that was valid stays valid."""
    suffix = f"-st{serial}"
    if len(key) >= 2 and key.startswith('"') and key.endswith('"'):
        return f'"{unique_key(key[1:-1], serial)}"'
    head = key[: max(0, min(len(key), MAX_KEY) - len(suffix))]
    return head + suffix


def _header_mode(case: Any) -> GenerationMode | None:
    meta = case.meta
    if meta is None:
        return None
    component = meta.components.get(ParameterLocation.HEADER)
    mode: GenerationMode = component.mode if component is not None else meta.generation.mode
    return mode


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Gives a positive case's ``Idempotency-Key`` a tail no other request has."""
    headers = case.headers
    if not isinstance(headers, MutableMapping) or _header_mode(case) == GenerationMode.NEGATIVE:
        return
    for name, value in list(headers.items()):
        if name.lower() == HEADER and isinstance(value, str) and value:
            headers[name] = unique_key(value, next(_serial))
