"""Schemathesis hooks, loaded by the schemathesis process itself (``hooks`` in its config).

Two rules that are data, not schema, each applied to valid-mode cases only, and one header
every browser sends.

Browser sign-in: ``POST /auth/session`` refuses, as login CSRF, a request that names no origin
(no ``Sec-Fetch-Site``, ``Origin`` or ``Referer``), and a fuzzer sends none; every case gets
``Sec-Fetch-Site: same-origin``, as the console's sign-in form sends it, so that the fuzzing
reaches the form. The refusal itself has tests of its own (tests/identity/test_cookie_sessions.py).

Registration: a password the policy takes (see ``_policy_passwords``).

Idempotency keys: every request the fuzzer means to be valid carries an ``Idempotency-Key`` of its
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

import hashlib
import itertools
import json
from collections.abc import Mapping, MutableMapping
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

from bastion.security.passwords import password_problems

HEADER = "idempotency-key"
REGISTER = "POST /auth/register"
SIGN_IN = "POST /auth/session"
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


def _mode(case: Any, location: ParameterLocation) -> GenerationMode | None:
    meta = case.meta
    if meta is None:
        return None
    component = meta.components.get(location)
    mode: GenerationMode = component.mode if component is not None else meta.generation.mode
    return mode


def _unique_keys(case: Any) -> None:
    headers = case.headers
    if not isinstance(headers, MutableMapping):
        return
    if _mode(case, ParameterLocation.HEADER) == GenerationMode.NEGATIVE:
        return
    for name, value in list(headers.items()):
        if name.lower() == HEADER and isinstance(value, str) and value:
            headers[name] = unique_key(value, next(_serial))


def acceptable_password(body: Mapping[str, Any]) -> str:
    """A password the policy takes for this body's username and email, made from the body
    so that a seed still decides every request."""
    username, email = str(body.get("username", "")), str(body.get("email", ""))
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    for start in range(0, len(digest) - 20):
        candidate = f"fuzzed passphrase {digest[start:start + 20]}"
        if not password_problems(candidate, username=username, email=email):
            return candidate
    raise AssertionError("no acceptable password from this body")  # pragma: no cover


def _policy_passwords(case: Any) -> None:
    """A positive registration whose password the policy refuses (a common password, or
    one holding the username or email) gets one it takes. The policy is data, not schema:
    no JSON Schema can say "not in the breach list", so the fuzzer's "000000000000000"
    would otherwise be reported as a valid request rejected. Negative cases keep theirs."""
    body = case.body
    if case.operation.label != REGISTER or not isinstance(body, MutableMapping):
        return
    if _mode(case, ParameterLocation.BODY) == GenerationMode.NEGATIVE:
        return
    password = body.get("password")
    if isinstance(password, str) and password_problems(
        password, username=str(body.get("username", "")), email=str(body.get("email", ""))
    ):
        body["password"] = acceptable_password(body)


def _from_the_console(case: Any) -> None:
    if case.operation.label == SIGN_IN:
        case.headers = {**(case.headers or {}), "Sec-Fetch-Site": "same-origin"}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Each positive case: its own ``Idempotency-Key``, and a password the policy takes;
    each browser sign-in: the Fetch Metadata of the service's own page."""
    _unique_keys(case)
    _policy_passwords(case)
    _from_the_console(case)
