"""/auth and the JWKS: thin routes over the identity services (grants, accounts, revocation)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Path, Request, Response
from fastapi.responses import JSONResponse

from bastion.audit.context import AuditContext
from bastion.clock import utc_now
from bastion.dependencies import CurrentPrincipal, DbReader, DbSession, authenticated, public
from bastion.identity.cookie_sessions import CookieSessions
from bastion.identity.grants import GrantError, Grants, MfaRequired
from bastion.identity.schemas import (
    JsonWebKeySet,
    OAuthError,
    PasswordChangeRequest,
    RegisterRequest,
    SessionOut,
    TokenResponse,
    UserPublic,
)
from bastion.identity.second_factor import FactorProof
from bastion.middleware.body_limit import SMALL_BODY_BYTES
from bastion.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    Page,
    decode_cursor,
    read_time_id,
    time_id_values,
)
from bastion.routing import service_router
from bastion.security.csrf import origin_refusal
from bastion.security.principal import Principal
from bastion.security.ratelimits import LOGIN_LIMIT, REGISTER_LIMIT
from bastion.security.text import LINE_PATTERN, holds_control_character
from bastion.services import services_of

router = service_router("identity")

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 10
MFA_GRANT_TYPE = "urn:bastion:params:oauth:grant-type:mfa"
GRANT_TYPES = ("password", "refresh_token", MFA_GRANT_TYPE)
# Checking the current password is a password guess like a login: same shared quota.
PasswordChanger = Annotated[Principal, authenticated(rate_limit=LOGIN_LIMIT)]


# C0 controls (NUL included), DEL and C1 controls: no username, password, token or scope
# holds one, and PostgreSQL refuses NUL in text outright (a DataError, once a 500).
_FORM_TEXT = {"type": "string", "pattern": LINE_PATTERN}


def _form_body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for a urlencoded body the route reads itself (RFC 6749 forms): other
    parameters are ignored (§3.2), but count toward the bound and take no control
    characters either."""
    schema = {
        "type": "object",
        "required": required,
        "properties": properties,
        "maxProperties": MAX_FORM_FIELDS,
        "propertyNames": {"pattern": LINE_PATTERN},
        "additionalProperties": _FORM_TEXT,
    }
    return {
        "requestBody": {"required": True, "content": {FORM_CONTENT_TYPE: {"schema": schema}}}
    }


_TOKEN_PROPERTIES = {
    "grant_type": {"type": "string", "enum": list(GRANT_TYPES)},
    "username": _FORM_TEXT,
    "password": {**_FORM_TEXT, "format": "password"},
    "refresh_token": _FORM_TEXT,
    "scope": _FORM_TEXT,
    "mfa_token": _FORM_TEXT,
    "otp": _FORM_TEXT,
    "recovery_code": _FORM_TEXT,
}
_REVOKE_PROPERTIES = {"token": {**_FORM_TEXT, "minLength": 1}, "token_type_hint": _FORM_TEXT}
_TOKEN_FORM = _form_body(["grant_type"], _TOKEN_PROPERTIES)
_REVOKE_FORM = _form_body(["token"], _REVOKE_PROPERTIES)
# The parameters each endpoint reads: the ones its document names, and no other.
TOKEN_PARAMETERS = frozenset(_TOKEN_PROPERTIES)
REVOKE_PARAMETERS = frozenset(_REVOKE_PROPERTIES)


async def _read_form(request: Request, known: frozenset[str]) -> dict[str, str] | None:
    """The ``known`` parameters of an RFC 6749 form: urlencoded, few fields, no control
    characters in any name or value, each known parameter at most once (§3.2); else None.
    A parameter sent without a value is as if not sent, and others are ignored (§3.2)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM_CONTENT_TYPE:
        return None
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        return None
    if any(holds_control_character(part) for pair in pairs for part in pair):
        return None
    mine = [(name, value) for name, value in pairs if name in known]
    if len({name for name, _ in mine}) != len(mine):
        return None
    return {name: value for name, value in mine if value}


def _bad_form() -> JSONResponse:
    return _oauth_error("invalid_request", "The request must be a valid form.")


def _oauth_error(
    error: str, description: str, *, status_code: int = 400, **extra: str
) -> JSONResponse:
    body = OAuthError(error=error, error_description=description).model_dump()
    return JSONResponse(
        {**body, **extra},
        status_code=status_code,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _factor_proof(form: dict[str, str]) -> FactorProof | JSONResponse | None:
    """The second factor a form carries: ``otp`` or ``recovery_code`` (None: neither);
    both at once is an ``invalid_request``."""
    otp, recovery_code = form.get("otp"), form.get("recovery_code")
    if otp and recovery_code:
        return _oauth_error("invalid_request", "Send otp or recovery_code, not both.")
    if otp or recovery_code:
        return FactorProof(otp=otp, recovery_code=recovery_code)
    return None


@router.post(
    "/auth/register",
    status_code=201,
    responses={409: {}, 422: {}},
    dependencies=[public(rate_limit=REGISTER_LIMIT)],
    max_body_size=SMALL_BODY_BYTES,
)
async def register(body: RegisterRequest, request: Request, session: DbSession) -> UserPublic:
    """Create an account. The password policy follows NIST SP 800-63B-4."""
    accounts = services_of(request.app).accounts
    user = await accounts.register(session, body, AuditContext.of(request))
    return UserPublic.model_validate(user)


@router.post(
    "/auth/token",
    response_model=TokenResponse,
    responses={
        400: {
            "model": OAuthError,
            "description": "RFC 6749 §5.2 error (`invalid_request`, `invalid_grant`, "
            "`unsupported_grant_type`, `invalid_scope`), with `Cache-Control: no-store`; "
            "or `mfa_required` with an `mfa_token` (single use, 5 minutes): the password was "
            "right and the account has a second factor; complete the sign-in with "
            f"`grant_type={MFA_GRANT_TYPE}`, the `mfa_token` and `otp` or `recovery_code`.",
        }
    },
    openapi_extra=_TOKEN_FORM,
    dependencies=[public(rate_limit=LOGIN_LIMIT)],
    max_body_size=SMALL_BODY_BYTES,
)
async def token(request: Request) -> Response:
    """OAuth2 token endpoint (RFC 6749): the ``password`` and ``refresh_token`` grants, and
    ``urn:bastion:params:oauth:grant-type:mfa`` to complete a password grant that answered
    ``mfa_required``."""
    form = await _read_form(request, TOKEN_PARAMETERS)
    if form is None:
        return _bad_form()
    grant_type = form.get("grant_type")
    if grant_type is None:
        return _oauth_error("invalid_request", "grant_type is required.")
    grant = _GRANTS.get(grant_type)
    if grant is None:
        return _oauth_error(
            "unsupported_grant_type", f"Use password, refresh_token or {MFA_GRANT_TYPE}."
        )
    try:
        issued = await grant(services_of(request.app).grants, form, AuditContext.of(request))
    except MfaRequired as required:
        assert required.mfa_token is not None  # noqa: S101 (the password grant sets it)
        return _oauth_error(required.error, required.description, mfa_token=required.mfa_token)
    except GrantError as refused:
        # The grant committed the refusal's audit event and lockout count already.
        return _oauth_error(refused.error, refused.description)
    if isinstance(issued, JSONResponse):
        return issued
    return JSONResponse(
        issued.model_dump(), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
    )


async def _password_grant(
    grants: Grants, form: dict[str, str], audit: AuditContext
) -> TokenResponse | JSONResponse:
    username, password = form.get("username"), form.get("password")
    if not username or not password:
        return _oauth_error("invalid_request", "username and password are required.")
    return await grants.password_grant(
        username=username, password=password, scope=form.get("scope"), audit=audit
    )


async def _refresh_grant(
    grants: Grants, form: dict[str, str], audit: AuditContext
) -> TokenResponse | JSONResponse:
    refresh_token = form.get("refresh_token")
    if not refresh_token:
        return _oauth_error("invalid_request", "refresh_token is required.")
    return await grants.refresh_grant(
        refresh_token=refresh_token, scope=form.get("scope"), audit=audit
    )


async def _mfa_grant(
    grants: Grants, form: dict[str, str], audit: AuditContext
) -> TokenResponse | JSONResponse:
    mfa_token, proof = form.get("mfa_token"), _factor_proof(form)
    if isinstance(proof, JSONResponse):
        return proof
    if not mfa_token or proof is None:
        return _oauth_error("invalid_request", "mfa_token and otp or recovery_code are required.")
    return await grants.mfa_grant(mfa_token=mfa_token, proof=proof, audit=audit)


_Grant = Callable[[Grants, dict[str, str], AuditContext], Awaitable[TokenResponse | JSONResponse]]
_GRANTS: dict[str, _Grant] = {
    "password": _password_grant,
    "refresh_token": _refresh_grant,
    MFA_GRANT_TYPE: _mfa_grant,
}


_SESSION_PROPERTIES = {
    "username": _FORM_TEXT,
    "password": {**_FORM_TEXT, "format": "password"},
    "otp": _FORM_TEXT,
    "recovery_code": _FORM_TEXT,
}
_SESSION_FORM = _form_body(["username", "password"], _SESSION_PROPERTIES)
SESSION_PARAMETERS = frozenset(_SESSION_PROPERTIES)
_CSRF_REFUSAL = {
    "description": "Not sent from this service's own pages: `Sec-Fetch-Site` is not "
    "`same-origin`/`none`, or without it `Origin` (else `Referer`) is not "
    "`BASTION_PUBLIC_URL`, or none of them was sent (login CSRF).",
}


@router.post(
    "/auth/session",
    status_code=204,
    response_class=Response,
    responses={
        204: {
            "description": "Signed in: the session cookie (`bastion_session`, HttpOnly; "
            "`__Host-bastion_session`, Secure, over HTTPS) and the CSRF cookie "
            "(`bastion_csrf` / `__Host-bastion_csrf`, readable: send its value as "
            "`X-CSRF-Token` on every unsafe request) are set."
        },
        400: {
            "model": OAuthError,
            "description": "RFC 6749 §5.2 error, as `/auth/token`'s password grant: "
            "`invalid_request` or `invalid_grant` (a wrong `otp` or `recovery_code` too), "
            "with `Cache-Control: no-store`.",
        },
        401: {
            "model": OAuthError,
            "description": "`mfa_required`: the password is right and the account has a "
            "second factor; send the form again with `otp` or `recovery_code`.",
        },
        403: _CSRF_REFUSAL,
    },
    openapi_extra=_SESSION_FORM,
    dependencies=[public(rate_limit=LOGIN_LIMIT)],
    max_body_size=SMALL_BODY_BYTES,
)
async def open_browser_session(request: Request) -> Response:
    """Sign a browser in: the password check, lockout, login quota and audit of the
    password grant, ending in a session cookie instead of tokens."""
    cookies = services_of(request.app).cookie_sessions
    cookies.require_started()
    refusal = origin_refusal(request.headers, cookies.public_origin)
    if refusal is not None:
        await cookies.refuse(request, refusal)  # login CSRF: another site's sign-in form
    form = await _read_form(request, SESSION_PARAMETERS)
    if form is None:
        return _bad_form()
    username, password = form.get("username"), form.get("password")
    if not username or not password:
        return _oauth_error("invalid_request", "username and password are required.")
    proof = _factor_proof(form)
    if isinstance(proof, JSONResponse):
        return proof
    try:
        login = await services_of(request.app).grants.cookie_sign_in(
            username=username, password=password, audit=AuditContext.of(request), proof=proof
        )
    except MfaRequired as required:
        # The form is sent again with otp or recovery_code; no token to hold meanwhile.
        return _oauth_error(required.error, required.description, status_code=401)
    except GrantError as refused:
        return _oauth_error(refused.error, refused.description)
    response = Response(status_code=204, headers={"Pragma": "no-cache"})
    cookies.set_cookies(response, request.scope, login)
    return response


@router.delete(
    "/auth/session",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "Signed out: the session is ended and both cookies cleared."},
        401: {},
    },
)
async def end_browser_session(
    principal: CurrentPrincipal, request: Request, session: DbSession
) -> Response:
    """Sign this browser out: its session ends at once, in every process, and both cookies
    are cleared. (With a bearer token instead, it ends that token's session, as
    ``/auth/logout`` does.)"""
    await services_of(request.app).revocation.logout(
        session, principal, AuditContext.of(request)
    )
    response = Response(status_code=204)
    CookieSessions.clear_cookies(response, request.scope)
    return response


@router.post(
    "/auth/revoke",
    response_class=Response,
    responses={
        200: {"description": "Revoked, or nothing to revoke (RFC 7009 §2.2): an empty body."},
        400: {
            "model": OAuthError,
            "description": "RFC 6749 §5.2 `invalid_request`: the body is not a valid form, "
            "or it has no token.",
        },
    },
    openapi_extra=_REVOKE_FORM,
    dependencies=[public()],
    max_body_size=SMALL_BODY_BYTES,
)
async def revoke(request: Request, session: DbSession) -> Response:
    """RFC 7009 revocation. Always 200, so it reveals nothing about the token."""
    form = await _read_form(request, REVOKE_PARAMETERS)
    if form is None:
        return _bad_form()
    token_value = form.get("token")
    if not token_value:
        return _oauth_error("invalid_request", "token is required.")  # RFC 7009 §2.1
    revocation = services_of(request.app).revocation
    await revocation.revoke(session, token=token_value, audit=AuditContext.of(request))
    return Response(status_code=200)


@router.post(
    "/auth/logout", status_code=204, response_class=Response, responses={401: {}},
    max_body_size=SMALL_BODY_BYTES,
)
async def logout(principal: CurrentPrincipal, request: Request, session: DbSession) -> None:
    """End this session: its refresh tokens and access tokens stop working at once."""
    await services_of(request.app).revocation.logout(
        session, principal, AuditContext.of(request)
    )


@router.get("/auth/me", responses={401: {}})
async def me(principal: CurrentPrincipal, request: Request) -> UserPublic:
    """The signed-in account; a read that never waits for a writer."""
    return await services_of(request.app).accounts.current_user(principal)


@router.post(
    "/auth/password",
    status_code=204,
    response_class=Response,
    responses={400: {}, 401: {}, 422: {}},
    max_body_size=SMALL_BODY_BYTES,
)
async def change_password(
    body: PasswordChangeRequest,
    principal: PasswordChanger,
    request: Request,
) -> None:
    """Change the password; every other session of the account is revoked."""
    await services_of(request.app).accounts.change_password(
        principal,
        current_password=body.current_password,
        new_password=body.new_password,
        audit=AuditContext.of(request),
    )


SESSIONS_CURSOR = "auth.sessions"


@router.get("/auth/sessions")
async def list_sessions(
    principal: CurrentPrincipal,
    request: Request,
    session: DbReader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[SessionOut]:
    """The caller's live sessions, newest first: where and when each was opened and last
    used (a login or a refresh), and which one this request belongs to."""
    codec = services_of(request.app).cursors
    after = None
    if cursor is not None:
        after = decode_cursor(codec, SESSIONS_CURSOR, cursor, read_time_id)
    found, more = await services_of(request.app).sessions.list_live(
        session, principal, limit=limit, after=after
    )
    next_cursor = None
    if more and found:
        next_cursor = codec.encode(
            SESSIONS_CURSOR, time_id_values((found[-1].created_at, found[-1].id))
        )
    items = [
        SessionOut(
            id=login.id,
            kind=login.kind,
            created_at=login.created_at,
            last_used_at=login.last_used_at,
            client_ip=login.client_ip,
            user_agent=login.user_agent,
            current=str(login.id) == principal.session_id,
        )
        for login in found
    ]
    return Page[SessionOut](items=items, next_cursor=next_cursor)


@router.delete("/auth/sessions/{session_id}", status_code=204, response_class=Response)
async def end_session(
    session_id: Annotated[str, Path(description="The session's id (a UUID).")],
    principal: CurrentPrincipal,
    request: Request,
    session: DbSession,
) -> None:
    """End one of the caller's sessions at once: its access tokens are refused and its
    refresh token no longer refreshes, in every process. Another user's session is a 404."""
    await services_of(request.app).sessions.end(
        session, principal, session_id, AuditContext.of(request)
    )


@router.get(
    "/.well-known/jwks.json",
    responses={200: {"model": JsonWebKeySet}},
    dependencies=[public()],
)
async def jwks(request: Request) -> JSONResponse:
    """Public keys of every key whose tokens may still be valid."""
    services = services_of(request.app)
    ring = await services.keys.reload_if_stale() or await services.keys.ring()
    document = ring.jwks(
        now=utc_now(), max_token_lifetime=services.settings.access_token_ttl
    )
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=60"})
