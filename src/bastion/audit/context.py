"""Who is acting, from where, in answer to which request; and the two ways to record it.

``record`` appends inside the caller's transaction, so a change and its event commit or
vanish together. ``record_detached`` appends in a transaction of its own: for a refusal that
must be on record although the request's own transaction rolls back with the error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from bastion.audit.events import AuditEventType, AuditRecord, DetailValue, Outcome
from bastion.audit.service import record_event
from bastion.clock import utc_now
from bastion.middleware.access_log import USER_ID_SCOPE_KEY
from bastion.middleware.request_id import request_id_of
from bastion.security.client_ip import client_address
from bastion.storage.database import Database

_CLIENT_IP_WIDTH = 45  # the audit_events column
USER_AGENT_WIDTH = 200  # the sessions column
_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def _user_agent(value: str | None) -> str | None:
    """The client's own description, shown back to its user in their session list: printable
    ASCII only (anything else becomes "?", so nothing in it can disguise itself), cut to
    the column."""
    if not value:
        return None
    return _PRINTABLE.sub("?", value[:USER_AGENT_WIDTH])


@dataclass(frozen=True, slots=True)
class AuditContext:
    """The request-side fields of every audit event a request writes."""

    actor_id: str | None = None
    client_ip: str | None = None
    request_id: str | None = None
    # Not part of any event: where a login came from, for the session it opens.
    user_agent: str | None = None

    @classmethod
    def of(cls, connection: HTTPConnection) -> AuditContext:
        """The context of a request. The client address is ``client_address``: the peer, or
        behind a trusted proxy the client it names (what the access log and the rate limiter
        use). The actor is the bearer token's user, once the route policy has verified it."""
        scope = connection.scope
        client_ip = client_address(scope)
        return cls(
            actor_id=scope.get(USER_ID_SCOPE_KEY),
            client_ip=client_ip[:_CLIENT_IP_WIDTH] if client_ip else None,
            request_id=request_id_of(scope),
            user_agent=_user_agent(connection.headers.get("user-agent")),
        )

    def as_actor(self, actor_id: str | None) -> AuditContext:
        """The same request, acting as ``actor_id`` (a login acts for the user it signs in)."""
        return replace(self, actor_id=actor_id)

    def event(
        self,
        type: AuditEventType,
        outcome: Outcome,
        *,
        subject: str | None = None,
        occurred_at: datetime | None = None,
        **details: DetailValue,
    ) -> AuditRecord:
        return AuditRecord(
            occurred_at=occurred_at or utc_now(),
            type=type,
            outcome=outcome,
            actor_id=self.actor_id,
            subject_id=subject,
            client_ip=self.client_ip,
            request_id=self.request_id,
            details=details,
        )

    async def record(
        self,
        session: AsyncSession,
        type: AuditEventType,
        outcome: Outcome,
        *,
        subject: str | None = None,
        occurred_at: datetime | None = None,
        **details: DetailValue,
    ) -> None:
        """Appends the event inside ``session``'s transaction (call it as the unit of work's
        last write: it locks the chain head until the commit)."""
        record = self.event(type, outcome, subject=subject, occurred_at=occurred_at, **details)
        await record_event(session, record)

    async def record_detached(
        self,
        database: Database,
        type: AuditEventType,
        outcome: Outcome,
        *,
        subject: str | None = None,
        occurred_at: datetime | None = None,
        **details: DetailValue,
    ) -> None:
        """Appends the event in a transaction of its own, committed before this returns."""
        record = self.event(type, outcome, subject=subject, occurred_at=occurred_at, **details)
        async with database.transaction() as session:
            await record_event(session, record)


SYSTEM = AuditContext()
"""The context of what no request asked for: the CLI, start-up."""
