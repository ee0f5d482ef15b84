"""The OpenAPI document, completed with every answer the server can give.

FastAPI documents what a route declares: its success, the errors it names, and a 422 in
FastAPI's own shape. Every other answer comes from layers the route never sees: the policy
(401, 403), the quota (429, or 503 when its store does not answer), the body limit (413),
the media-type check (415), JSON parsing (400), validation (422, as problem details) and
object lookups (404). ``complete_document`` adds each to the operations it applies to,
worked out from the route itself (its policies, its body, its parameters), so a client
generated from the document is never surprised and a new route is documented as it is
served. What a route declares itself (a description, the token endpoint's OAuth error
body) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, params
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute

from bastion.dependencies import BearerToken, policy_checks
from bastion.problems import PROBLEM_CONTENT_TYPE, status_phrase
from bastion.ratelimiting import RATE_LIMITED_RESPONSES
from bastion.routing import accepted_media_types

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_VALIDATION_PROBLEM_REF = {"$ref": "#/components/schemas/ValidationProblem"}

PROBLEM_SCHEMAS: dict[str, dict[str, Any]] = {
    "Problem": {
        "title": "Problem",
        "description": "RFC 9457 problem details. `detail` is a fixed sentence: never a "
        "stack trace, SQL, a path or a submitted value.",
        "type": "object",
        "required": ["type", "title", "status", "detail", "request_id"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "request_id": {"type": ["string", "null"]},
        },
    },
    "FieldError": {
        "title": "FieldError",
        "description": "Where (by the schema's own names: the location, then the field) "
        "and what; never the value.",
        "type": "object",
        "required": ["loc", "msg"],
        "properties": {
            "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
            "msg": {"type": "string"},
        },
    },
    "ValidationProblem": {
        "title": "ValidationProblem",
        "allOf": [
            _PROBLEM_REF,
            {
                "type": "object",
                "required": ["errors"],
                "properties": {
                    "errors": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/FieldError"},
                    }
                },
            },
        ],
    },
}
# FastAPI's own 422 body, which bastion never sends.
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

_CHALLENGE = {
    "WWW-Authenticate": {
        "description": 'RFC 6750 challenge: `Bearer realm="bastion"`, with '
        '`error="invalid_token"` when a token was sent, or `error="insufficient_scope"` '
        "and the `scope` needed (403).",
        "schema": {"type": "string"},
    }
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}


@dataclass(frozen=True, slots=True)
class _Route:
    """What decides which errors an operation can answer."""

    authenticated: bool
    needs_permissions: bool
    metered: bool
    body_media_types: tuple[str, ...]
    validated_body: bool
    has_parameters: bool
    has_path_parameters: bool

    @classmethod
    def of(cls, route: APIRoute) -> _Route:
        checks = policy_checks(route.dependant)
        bearers = [check for check in checks if isinstance(check.policy, BearerToken)]
        # Parameters a route's dependencies declare (a note's id, read by ``VisibleNote``)
        # are the route's too.
        parameters = get_flat_params(route.dependant)
        extra_parameters = (route.openapi_extra or {}).get("parameters", [])
        return cls(
            authenticated=bool(bearers),
            needs_permissions=any(check.scopes for check in bearers),
            metered=any(check.policy.rate_limit is not None for check in checks),
            body_media_types=accepted_media_types(route),
            validated_body=route.body_field is not None,
            has_parameters=bool(parameters or extra_parameters),
            has_path_parameters=any(
                isinstance(parameter.field_info, params.Path) for parameter in parameters
            ),
        )


_UNSAFE_METHODS = frozenset({"post", "put", "patch", "delete"})
_CSRF_403 = (
    " With the browser session cookie instead of a token: the request did not come from "
    "this service's own pages (`Sec-Fetch-Site`, else `Origin`/`Referer`), or its "
    "`X-CSRF-Token` is not this session's (audited)."
)
BROWSER_SESSION_SCHEME = "BrowserSession"
_BROWSER_SESSION = {
    "type": "apiKey",
    "in": "cookie",
    "name": "bastion_session",
    "description": "The browser session `POST /auth/session` opens (`__Host-bastion_session` "
    "over HTTPS), for the service's own pages: every operation that takes the bearer token "
    "takes it instead, with the permissions of the user's roles at sign-in. Unsafe requests "
    "also send the CSRF cookie's value as `X-CSRF-Token` and come from the service's own "
    "origin. A request with a bearer token is authenticated by the token alone. (Stated "
    "here, not in each operation's `security`: API clients use the token.)",
}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}},
    }
    if headers:
        response["headers"] = headers
    return response


def _answers(route: _Route, method: str, *, browser_session: bool) -> dict[str, dict[str, Any]]:
    """Every error status ``route`` can answer, with its body and headers."""
    answers: dict[str, dict[str, Any]] = {}
    takes_input = bool(route.body_media_types) or route.has_parameters
    if takes_input:
        answers["400"] = _problem(
            "A malformed request: a body that is not valid JSON or not UTF-8, a malformed "
            "header, or a value the database cannot store."
        )
    if route.authenticated:
        answers["401"] = _problem(
            "No access token, or one that is invalid, expired or revoked.", _CHALLENGE
        )
    csrf = browser_session and route.authenticated and method in _UNSAFE_METHODS
    if route.needs_permissions:
        answers["403"] = _problem(
            "The token's scope lacks a permission this operation needs (audited)."
            + (_CSRF_403 if csrf else ""),
            _CHALLENGE,
        )
    elif csrf:
        answers["403"] = _problem(_CSRF_403.strip())
    if route.has_path_parameters:
        answers["404"] = _problem(
            "No such resource, or one the caller may not see (the same answer)."
        )
    if route.body_media_types:
        answers["413"] = _problem("The body is larger than this operation takes.")
        accept = "Accept-Patch" if method == "patch" else "Accept-Post"
        answers["415"] = _problem(
            f"The body's Content-Type is not one of: {', '.join(route.body_media_types)}.",
            {accept: {"description": "the media types accepted", "schema": {"type": "string"}}},
        )
    if route.validated_body or route.has_parameters:
        answers["422"] = {
            "description": "A parameter or body the schema refuses; `errors` says where "
            "and why, never with the value.",
            "content": {PROBLEM_CONTENT_TYPE: {"schema": _VALIDATION_PROBLEM_REF}},
        }
    if route.metered:
        answers["429"] = {
            **RATE_LIMITED_RESPONSES[429],
            "content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}},
        }
        answers["503"] = _problem(
            "The database or the rate-limit store does not answer in time; retry after "
            "Retry-After seconds.",
            _RETRY_AFTER,
        )
    return answers


def _merge(declared: dict[str, Any] | None, answer: dict[str, Any], status: str) -> dict[str, Any]:
    """The route's own description and body win; what it left out is filled in."""
    if declared is None:
        return answer
    merged = dict(declared)
    generic = {"", status_phrase(int(status)), "Validation Error"}
    if merged.get("description", "") in generic:
        merged["description"] = answer["description"]
    content = merged.get("content")
    if status == "422" or not content or all(not media for media in content.values()):
        merged["content"] = answer["content"]
    if "headers" in answer:
        merged["headers"] = {**answer["headers"], **merged.get("headers", {})}
    return merged


def _complete_operation(
    operation: dict[str, Any], route: _Route, method: str, *, browser_session: bool
) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    answers = _answers(route, method, browser_session=browser_session)
    for status, answer in answers.items():
        responses[status] = _merge(responses.get(status), answer, status)
    # An error the route declared itself (its 409, the routers' 429) without a body.
    for status in list(responses):
        if status.startswith(("4", "5")) and status not in answers:
            fallback = _problem(status_phrase(int(status)))
            responses[status] = _merge(responses[status], fallback, status)


def complete_document(
    app: FastAPI, document: dict[str, Any], *, browser_session: bool = False
) -> dict[str, Any]:
    """``document`` (FastAPI's, for ``app``) with every operation's error answers, in
    place; FastAPI's unused validation schemas are dropped."""
    paths = document.get("paths", {})
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        operations = paths.get(route.path_format, {})
        facts = _Route.of(route)
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is not None:
                _complete_operation(
                    operation, facts, method.lower(), browser_session=browser_session
                )
    components = document.setdefault("components", {})
    if browser_session:
        components.setdefault("securitySchemes", {})[BROWSER_SESSION_SCHEME] = _BROWSER_SESSION
    schemas = components.setdefault("schemas", {})
    schemas.update(PROBLEM_SCHEMAS)
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    return document
