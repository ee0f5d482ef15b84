"""Where the security layer records what it refused: audit sinks.

``require()`` audits every 403 it answers, and the service records CSRF refusals the same
way. In bastion's own service the events go into its hash-chained audit log (the
database); a toolkit app without that database gets ``LogAuditSink``, one structured log line
per event, so a refusal is always recorded and never needs bastion's schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bastion.logs import get_logger

if TYPE_CHECKING:
    from bastion.storage.database import Database

DetailValue = str | int | bool | None


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """One refusal (or other security decision), with the request-side facts."""

    type: str  # "access_denied", "csrf_refusal"
    outcome: str  # "denied", "failure", "success"
    actor_id: str | None = None
    subject_id: str | None = None
    client_ip: str | None = None
    request_id: str | None = None
    details: dict[str, DetailValue] = field(default_factory=dict)


@runtime_checkable
class AuditSink(Protocol):
    """Records one event; called on the request's path, so keep it quick (a log line, one
    insert). A sink that cannot record raises, and the request fails closed."""

    async def record(self, event: SecurityEvent) -> None: ...


class LogAuditSink:
    """The default sink: a structured ``security_event`` warning on the ``bastion.audit``
    logger (secrets redacted like every line)."""

    def __init__(self, logger_name: str = "bastion.audit") -> None:
        self._log = get_logger(logger_name)

    async def record(self, event: SecurityEvent) -> None:
        self._log.warning(
            "security_event",
            type=event.type,
            outcome=event.outcome,
            actor_id=event.actor_id,
            subject_id=event.subject_id,
            client_ip=event.client_ip,
            request_id=event.request_id,
            details=event.details,
        )


class DatabaseAuditSink:
    """bastion's service: each event appended to the hash-chained audit log in a
    transaction of its own, committed before the refusal is sent."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def record(self, event: SecurityEvent) -> None:
        from bastion.audit.context import AuditContext
        from bastion.audit.events import AuditEventType, Outcome

        context = AuditContext(
            actor_id=event.actor_id, client_ip=event.client_ip, request_id=event.request_id
        )
        details: dict[str, Any] = dict(event.details)
        await context.record_detached(
            self.database,
            AuditEventType(event.type),
            Outcome(event.outcome),
            subject=event.subject_id,
            **details,
        )
