"""Domain exceptions, free of HTTP, and their one translation to problem+json.

Every error the application can produce passes through ``install_problem_handlers``: routing
404/405, validation 422, ``HTTPException`` and domain errors. Validation errors keep only
``loc`` and ``msg``: Pydantic's ``input`` and ``ctx`` would echo what was sent (a password, a
token) back to the client and into logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from bastion.layer import DEFAULT_REALM, realm_of
from bastion.logs import get_logger
from bastion.middleware.request_id import request_id_of
from bastion.problems import (
    PROBLEM_CONTENT_TYPE,
    FieldError,
    problem_document,
    render_problem,
    status_phrase,
)
from bastion.schemas import UNKNOWN_FIELDS_ERROR, UNKNOWN_FIELDS_MESSAGE
from bastion.storage import StorageUnavailable
from bastion.storage.outages import Outage, OutageReports, sqlstate_of

_log = get_logger("bastion.storage")


class DomainError(Exception):
    """A refusal the domain decided on; ``detail`` is safe to show to the client."""

    detail = "The request cannot be completed."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.detail)
        if detail is not None:
            self.detail = detail


class NotFound(DomainError):
    detail = "The resource does not exist."


class Conflict(DomainError):
    detail = "The request conflicts with the current state of the resource."


class QuotaExceeded(Conflict):
    """Storing this would take the user past a configured limit; nothing was stored."""

    detail = "This would exceed your storage limit."


class Forbidden(DomainError):
    detail = "You are not allowed to do this."


class InsufficientScope(Forbidden):
    """A valid token without the permission the route requires (RFC 6750 §3.1)."""

    def __init__(self, required: list[str]) -> None:
        super().__init__()
        self.required = required


class InsufficientUserAuthentication(Forbidden):
    """A valid token with the permission, but signed in without the second factor the
    route needs (RFC 9470 step-up): sign in again with it."""

    detail = (
        "This needs a sign-in with a second factor: set up TOTP, then sign in again with "
        "a code."
    )


class CsrfRefused(Forbidden):
    """A cookie-authenticated request that did not come from the service's own pages."""

    detail = (
        "The request was refused: it did not come from this service's own pages "
        "(origin or CSRF token)."
    )


class BadRequest(DomainError):
    detail = "The request cannot be processed."


class Unauthenticated(DomainError):
    """No usable credentials. ``token_presented`` decides the RFC 6750 challenge."""

    detail = "Authentication is required."

    def __init__(self, detail: str | None = None, *, token_presented: bool = False) -> None:
        super().__init__(detail)
        self.token_presented = token_presented


class InvalidFields(DomainError):
    """Input that passed the schema but not a domain rule (e.g. the password policy)."""

    detail = "The request is invalid; see errors."

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__()
        self.errors = errors


class UnsupportedMediaType(DomainError):
    """A body in a media type the route does not read (RFC 9110 §15.5.16)."""

    detail = "The body's media type is not supported here; see Accept-Post or Accept-Patch."

    def __init__(self, accepted: list[str]) -> None:
        super().__init__()
        self.accepted = accepted


class RateLimited(DomainError):
    """More requests than the route's quota; ``retry_after`` seconds until one more fits."""

    detail = "Too many requests; retry after the time given in Retry-After."

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = max(1, retry_after)


DOMAIN_STATUS: dict[type[DomainError], int] = {
    RateLimited: 429,
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
    BadRequest: 400,
    Unauthenticated: 401,
    InvalidFields: 422,
    UnsupportedMediaType: 415,
}

UNAVAILABLE_DETAIL = "A backing service is not answering; try again shortly."
RETRY_AFTER_UNAVAILABLE = "5"


class ProblemResponse(Response):
    media_type = PROBLEM_CONTENT_TYPE

    def __init__(
        self,
        request: Request,
        status: int,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        document = problem_document(
            status, detail, request_id_of(request.scope), errors=errors, extensions=extensions
        )
        super().__init__(render_problem(document), status_code=status, headers=headers)


# Pydantic error types whose message is made from the schema alone (its limits, pattern,
# choices) or by our own validators (value_error), never from the submitted value.
_SCHEMA_MESSAGES = frozenset({
    "missing", "string_type", "string_too_short", "string_too_long",
    "string_pattern_mismatch", "int_type", "int_parsing", "int_from_float",
    "int_parsing_size", "float_type", "float_parsing", "bool_type", "bool_parsing",
    "greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of",
    "finite_number", "list_type", "too_short", "too_long", "dict_type", "model_type",
    "model_attributes_type", "literal_error", "enum", "uuid_type", "datetime_type",
    "datetime_parsing", "datetime_from_date_parsing", "date_parsing", "timezone_aware",
    "value_error", "assertion_error",
})
# The rest quote the value (``uuid_parsing`` names the character it choked on).
_FIXED_MESSAGES = {"uuid_parsing": "Input should be a valid UUID."}
INVALID_VALUE_MESSAGE = "Invalid value."
# A location part is one of the schema's names (a field, parameter or header) or an index;
# anything else would be a name the client chose.
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def _schema_location(loc: Any) -> list[str | int]:
    location: list[str | int] = []
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and _SCHEMA_NAME.fullmatch(part)):
            location.append(part)
        else:
            break
    return location


def field_errors(raw: list[dict[str, Any]] | Any) -> list[FieldError]:
    """Where each error is, by the schema's own names, and what is wrong, in words that
    hold nothing that was sent: an unknown field is reported at the object that holds it,
    without its name (which the client chose), and a message that would quote the value
    is replaced. Each distinct error once."""
    errors: list[FieldError] = []
    for error in raw:
        kind = error.get("type")
        loc = list(error.get("loc", ()))
        if kind == "extra_forbidden":
            # The last part is the unknown field's name: the object holding it is where.
            # (StrictModel's own UNKNOWN_FIELDS_ERROR is at the object already.)
            loc = loc[:-1]
        if kind in (UNKNOWN_FIELDS_ERROR, "extra_forbidden"):
            message = UNKNOWN_FIELDS_MESSAGE
        elif kind in _SCHEMA_MESSAGES:
            message = str(error.get("msg", INVALID_VALUE_MESSAGE))
        else:
            message = _FIXED_MESSAGES.get(str(kind), INVALID_VALUE_MESSAGE)
        entry: FieldError = {"loc": _schema_location(loc), "msg": message}
        if entry not in errors:
            errors.append(entry)
    return errors


MALFORMED_BODY_DETAIL = "The body is not valid JSON."


async def _validation_problem(request: Request, exc: Exception) -> Response:
    """422 for a body or parameter the schema refuses; 400 for a body that is not JSON at
    all (FastAPI reports that as a validation error too), as for one that is not UTF-8."""
    assert isinstance(exc, RequestValidationError)  # noqa: S101 (registered for this type)
    raw = exc.errors()
    if any(error.get("type") == "json_invalid" for error in raw):
        return ProblemResponse(request, 400, MALFORMED_BODY_DETAIL)
    return ProblemResponse(
        request, 422, "The request is invalid; see errors.", errors=field_errors(raw)
    )


def allowed_methods(request: Request) -> str:
    """Every method the request's path answers (RFC 9110 §10.2.1). Starlette's 405 names the
    methods of the first route that matched the path, not of all of them: ``/notes`` said
    ``Allow: POST`` though it answers GET too."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:
            methods.update(route_methods)
    return ", ".join(sorted(methods))


async def _http_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 (registered for this type)
    detail = exc.detail if isinstance(exc.detail, str) else status_phrase(exc.status_code)
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": allowed_methods(request)}
    return ProblemResponse(request, exc.status_code, detail, headers=headers)


def bearer_challenge(*, token_presented: bool, realm: str = DEFAULT_REALM) -> str:
    """RFC 6750 §3: name the error only when a token was actually presented."""
    if token_presented:
        return f'Bearer realm="{realm}", error="invalid_token"'
    return f'Bearer realm="{realm}"'


async def _domain_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)  # noqa: S101 (registered for this type)
    status = next(
        (code for kind, code in DOMAIN_STATUS.items() if isinstance(exc, kind)), 400
    )
    if isinstance(exc, Unauthenticated):
        challenge = bearer_challenge(
            token_presented=exc.token_presented, realm=realm_of(request.app)
        )
        return ProblemResponse(request, status, exc.detail, headers={"WWW-Authenticate": challenge})
    if isinstance(exc, InsufficientScope):
        challenge = (
            f'Bearer realm="{realm_of(request.app)}", error="insufficient_scope", '
            f'scope="{" ".join(exc.required)}"'
        )
        return ProblemResponse(request, status, exc.detail, headers={"WWW-Authenticate": challenge})
    if isinstance(exc, InsufficientUserAuthentication):
        challenge = (
            f'Bearer realm="{realm_of(request.app)}", error="insufficient_user_authentication", '
            'error_description="A second factor is required"'
        )
        return ProblemResponse(request, status, exc.detail, headers={"WWW-Authenticate": challenge})
    if isinstance(exc, InvalidFields):
        return ProblemResponse(request, status, exc.detail, errors=exc.errors)
    if isinstance(exc, UnsupportedMediaType):
        # RFC 5789 §3.1 and the W3C LDP Accept-Post: what the method would have accepted.
        name = "Accept-Patch" if request.method == "PATCH" else "Accept-Post"
        headers = {name: ", ".join(exc.accepted)}
        return ProblemResponse(request, status, exc.detail, headers=headers)
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
        return ProblemResponse(request, status, exc.detail, headers=headers)
    return ProblemResponse(request, status, exc.detail)


_outage_reports = OutageReports()


def unavailable_response(
    request: Request, outage: Outage, *, extensions: Mapping[str, Any] | None = None
) -> Response:
    """503 with ``Retry-After``; the cause goes to the log (``storage_unavailable``), once
    per cause per interval, never to the client."""
    _outage_reports.report(outage, request_id=request_id_of(request.scope))
    return ProblemResponse(
        request,
        503,
        UNAVAILABLE_DETAIL,
        headers={"Retry-After": RETRY_AFTER_UNAVAILABLE},
        extensions=extensions,
    )


async def _unavailable_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StorageUnavailable)  # noqa: S101 (registered for this type)
    return unavailable_response(request, exc.outage)


UNSTORABLE_DETAIL = "The request holds a value that cannot be stored."


async def _unstorable_problem(request: Request, exc: Exception) -> Response:
    """A value the database refuses (PostgreSQL: NUL in text, a number out of range): the
    client's input, so a 400, never a 500. The edge refuses such input first; this is the
    net under it. The log names the driver's error and SQLSTATE only: the driver's message
    quotes the statement and its parameters, which may hold secrets."""
    assert isinstance(exc, DBAPIError)  # noqa: S101 (registered for this type)
    code = sqlstate_of(exc)
    # SQLSTATE class 22 is "data exception"; asyncpg's arrive as a plain DBAPIError.
    if not isinstance(exc, DataError) and not (code or "").startswith("22"):
        raise exc  # not the client's value: the unhandled-error path (500)
    orig = exc.orig if isinstance(exc.orig, BaseException) else exc
    _log.warning(
        "database_refused_value",
        error=type(orig.__cause__ or orig).__name__,
        code=code,
        request_id=request_id_of(request.scope),
    )
    return ProblemResponse(request, 400, UNSTORABLE_DETAIL)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_problem)
    app.add_exception_handler(HTTPException, _http_problem)
    app.add_exception_handler(DomainError, _domain_problem)
    app.add_exception_handler(StorageUnavailable, _unavailable_problem)
    app.add_exception_handler(DBAPIError, _unstorable_problem)
