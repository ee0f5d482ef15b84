"""/admin: users and the audit log, for operators."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request, Response

from bastion.admin.schemas import (
    AdminUser,
    AuditEventOut,
    DateTimeText,
    UserUpdate,
    UuidText,
)
from bastion.admin.service import AdminService, UsersPosition
from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType
from bastion.dependencies import AppDatabase, DbReader, DbScanner, DbSession, require
from bastion.middleware.body_limit import SMALL_BODY_BYTES
from bastion.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    Page,
    decode_cursor,
    read_sequence,
    read_time_id,
    time_id_values,
)
from bastion.routing import service_router
from bastion.security.cursors import CursorCodec
from bastion.security.principal import Principal
from bastion.services import services_of

router = service_router("admin")

USERS_CURSOR = "admin.users"
AUDIT_CURSOR = "admin.audit"

UsersReader = Annotated[Principal, require("users:read")]
UsersWriter = Annotated[Principal, require("users:write")]
AuditReader = Annotated[Principal, require("audit:read")]


def _service(request: Request) -> AdminService:
    return services_of(request.app).admin


def _cursors(request: Request) -> CursorCodec:
    return services_of(request.app).cursors


def _users_position(request: Request, cursor: str | None) -> UsersPosition | None:
    if cursor is None:
        return None
    created_at, user_id = decode_cursor(_cursors(request), USERS_CURSOR, cursor, read_time_id)
    return UsersPosition(created_at=created_at, user_id=user_id)


def _audit_position(request: Request, cursor: str | None) -> int | None:
    if cursor is None:
        return None
    return decode_cursor(_cursors(request), AUDIT_CURSOR, cursor, read_sequence)


_ERRORS: dict[int | str, dict[str, Any]] = {401: {}, 403: {}}


@router.get("/admin/users", responses={**_ERRORS, 400: {}, 422: {}})
async def list_users(
    _principal: UsersReader,
    request: Request,
    session: DbReader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[AdminUser]:
    """Every account, oldest first, with its state (disabled, locked)."""
    users, more = await _service(request).list_users(
        session, limit=limit, after=_users_position(request, cursor)
    )
    next_cursor = None
    if more and users:
        last = users[-1]
        next_cursor = _cursors(request).encode(
            USERS_CURSOR, time_id_values((last.created_at, last.id))
        )
    return Page[AdminUser](
        items=[AdminUser.model_validate(user) for user in users], next_cursor=next_cursor
    )


@router.patch(
    "/admin/users/{user_id}", responses={**_ERRORS, 404: {}, 409: {}, 422: {}},
    max_body_size=SMALL_BODY_BYTES,
)
async def update_user(
    user_id: str,
    body: UserUpdate,
    principal: UsersWriter,
    request: Request,
    database: AppDatabase,
) -> AdminUser:
    """Change a user's roles or disable (re-enable) the account.

    Takes effect at once: access tokens issued before the change are refused, so clients
    refresh and get a scope computed from the new roles. Disabling also ends every session.
    An admin cannot disable themselves, and the last enabled admin cannot lose the role.
    """
    user = await _service(request).update_user_audited(
        database, principal, user_id, body, AuditContext.of(request)
    )
    return AdminUser.model_validate(user)


@router.post(
    "/admin/users/{user_id}/unlock",
    status_code=204,
    response_class=Response,
    responses={**_ERRORS, 404: {}},
    max_body_size=SMALL_BODY_BYTES,
)
async def unlock_user(
    user_id: str, principal: UsersWriter, request: Request, session: DbSession
) -> None:
    """Lift a lockout at once and reset the failure counters."""
    await _service(request).unlock(session, principal, user_id, AuditContext.of(request))


@router.get("/admin/audit", responses={**_ERRORS, 400: {}, 422: {}})
async def list_audit_events(
    _principal: AuditReader,
    request: Request,
    session: DbScanner,
    type: Annotated[AuditEventType | None, Query(description="Only this event type.")] = None,
    user_id: Annotated[
        UuidText | None, Query(description="Only events with this user as actor or subject.")
    ] = None,
    since: Annotated[
        DateTimeText | None,
        Query(description="Only events at or after this time (RFC 3339, with a time zone)."),
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[AuditEventOut]:
    """The audit log, newest first."""
    events, more = await _service(request).list_audit(
        session,
        type=type,
        user_id=user_id,
        since=since,
        limit=limit,
        before_seq=_audit_position(request, cursor),
    )
    next_cursor = None
    if more and events:
        next_cursor = _cursors(request).encode(AUDIT_CURSOR, [events[-1].seq])
    return Page[AuditEventOut](
        items=[AuditEventOut.model_validate(event) for event in events], next_cursor=next_cursor
    )
