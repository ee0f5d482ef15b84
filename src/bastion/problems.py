"""RFC 9457 problem details, rendered without FastAPI so pure-ASGI middleware can use them.

A problem body never carries anything the client did not already know: no stack trace, no
SQL, no path, no submitted value. ``detail`` is always a fixed sentence chosen by our code.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, TypedDict

import orjson
from starlette.types import Send

PROBLEM_CONTENT_TYPE = "application/problem+json"


class FieldError(TypedDict):
    """One invalid input: where it is and what is wrong, never its value."""

    loc: list[str | int]
    msg: str


def status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_document(
    status: int,
    detail: str,
    request_id: str | None,
    *,
    errors: list[FieldError] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every problem is ``about:blank`` titled by its status: the status and ``detail`` say
    all a client needs, and no problem type URI has to be kept alive. ``extensions`` are
    RFC 9457 extension members chosen by bastion's code (readiness's ``checks``), never
    input."""
    document: dict[str, Any] = {
        "type": "about:blank",
        "title": status_phrase(status),
        "status": status,
        "detail": detail,
        "request_id": request_id,
    }
    if errors is not None:
        document["errors"] = errors
    if extensions:
        document.update(extensions)
    return document


def render_problem(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)


async def send_problem(
    send: Send,
    status: int,
    detail: str,
    request_id: str | None,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answers a request directly from middleware, before or instead of the application."""
    body = render_problem(problem_document(status, detail, request_id))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
