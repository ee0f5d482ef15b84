"""What an audit event is, and the hash that chains each event to the one before it.

Pure: no I/O, no database. ``chain_hash`` is the whole tamper-evidence scheme::

    hash(seq) = SHA-256(orjson.dumps({
        "seq": seq, "prev_hash": hash(seq - 1),          # GENESIS_HASH for seq 1
        "occurred_at": "YYYY-MM-DDTHH:MM:SS.ffffff+00:00",
        "type", "outcome", "actor_id", "subject_id", "client_ip", "request_id", "details",
    }, OPT_SORT_KEYS)).hexdigest()

``seq`` is inside the hash so that a reordered event no longer matches, and every value is
rendered so that it reads back identically from SQLite (naive timestamps, JSON text) and
PostgreSQL (``timestamptz``, ``json``): timestamps are normalised to UTC with microseconds,
and ``details`` holds only strings, integers, booleans and nulls (a float could read back
differently, so it is refused).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import orjson

GENESIS_HASH = "0" * 64

DetailValue = str | int | bool | None

# The widths of the audit_events columns: PostgreSQL enforces them, SQLite does not, so they
# are checked here for both.
_MAX_LENGTHS = {"actor_id": 36, "subject_id": 36, "client_ip": 45, "request_id": 64}
_MAX_DETAIL_KEY = 64
_INT64 = range(-(2**63), 2**63)
_HEX_DIGITS = frozenset("0123456789abcdef")


class AuditEventType(StrEnum):
    REGISTRATION = "registration"
    LOGIN_SUCCESS = "login_success"
    LOGIN_FAILURE = "login_failure"
    LOCKOUT = "lockout"
    TOKEN_REFRESH = "token_refresh"  # noqa: S105 (an event name)
    REFRESH_REUSE = "refresh_reuse"
    LOGOUT = "logout"
    REVOCATION = "revocation"
    PASSWORD_CHANGE = "password_change"  # noqa: S105 (an event name)
    ROLE_CHANGE = "role_change"
    DISABLE = "disable"
    UNLOCK = "unlock"
    ACCESS_DENIED = "access_denied"
    CSRF_REFUSAL = "csrf_refusal"
    MFA_CHALLENGE = "mfa_challenge"  # the password was right; the second factor is awaited
    MFA_ENABLED = "mfa_enabled"
    MFA_DISABLED = "mfa_disabled"
    MFA_FAILURE = "mfa_failure"
    RECOVERY_CODE_USED = "recovery_code_used"
    RECOVERY_CODES_REGENERATED = "recovery_codes_regenerated"
    EMAIL_VERIFICATION_REQUESTED = "email_verification_requested"
    EMAIL_VERIFIED = "email_verified"
    PASSWORD_RESET_REQUESTED = "password_reset_requested"  # noqa: S105 (an event name)
    PASSWORD_RESET_COMPLETED = "password_reset_completed"  # noqa: S105 (an event name)


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one (as SQLite returns it) is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _check_text(name: str, value: str) -> None:
    # NUL cannot be stored in a PostgreSQL text column and a lone surrogate cannot be encoded:
    # either would fail the caller's transaction only on one backend, so both are refused here.
    if "\x00" in value:
        raise ValueError(f"audit field {name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"audit field {name} is not valid Unicode") from None


def _checked_details(details: dict[str, DetailValue]) -> dict[str, DetailValue]:
    checked: dict[str, DetailValue] = {}
    for key, value in details.items():
        if not isinstance(key, str) or not key or len(key) > _MAX_DETAIL_KEY:
            raise ValueError("audit detail keys are non-empty strings of at most 64 characters")
        _check_text("details key", key)
        if isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            if value not in _INT64:
                raise ValueError(f"audit detail {key!r} is outside the 64-bit integer range")
        elif isinstance(value, str):
            _check_text(f"details[{key!r}]", value)
        else:
            # Floats included: their text form need not survive a database round trip.
            raise TypeError(
                f"audit detail {key!r} must be a string, integer, boolean or null, "
                f"not {type(value).__name__}"
            )
        checked[key] = value
    return checked


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditRecord:
    """The fields of one event, validated and normalised when it is made."""

    occurred_at: datetime
    type: AuditEventType
    outcome: Outcome
    actor_id: str | None = None
    subject_id: str | None = None
    client_ip: str | None = None
    request_id: str | None = None
    details: dict[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.occurred_at, datetime):
            raise TypeError("occurred_at must be a datetime")
        # Stored as UTC: SQLite keeps only the wall-clock time, so any other offset would be
        # lost and the event would no longer match its hash.
        object.__setattr__(self, "occurred_at", as_utc(self.occurred_at))
        object.__setattr__(self, "type", AuditEventType(self.type))
        object.__setattr__(self, "outcome", Outcome(self.outcome))
        for name, limit in _MAX_LENGTHS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise TypeError(f"audit field {name} must be a string or None")
            if len(value) > limit:
                raise ValueError(f"audit field {name} is longer than {limit} characters")
            _check_text(name, value)
        if not isinstance(self.details, dict):
            raise TypeError("audit details must be a dict")
        object.__setattr__(self, "details", _checked_details(self.details))


def _timestamp(moment: datetime) -> str:
    return as_utc(moment).isoformat(timespec="microseconds")


def canonical_bytes(prev_hash: str, seq: int, record: AuditRecord) -> bytes:
    """The exact bytes that are hashed for event ``seq``."""
    if len(prev_hash) != 64 or not set(prev_hash) <= _HEX_DIGITS:
        raise ValueError("prev_hash must be 64 lower-case hex digits")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError("seq must be a positive integer")
    document = {
        "seq": seq,
        "prev_hash": prev_hash,
        "occurred_at": _timestamp(record.occurred_at),
        "type": record.type.value,
        "outcome": record.outcome.value,
        "actor_id": record.actor_id,
        "subject_id": record.subject_id,
        "client_ip": record.client_ip,
        "request_id": record.request_id,
        # Checked again: the dict inside a frozen record can still be mutated after creation.
        "details": _checked_details(record.details),
    }
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, seq: int, record: AuditRecord) -> str:
    """SHA-256 (hex) of event ``seq``, which links it to ``prev_hash``, its predecessor's."""
    return hashlib.sha256(canonical_bytes(prev_hash, seq, record)).hexdigest()
