"""The schema: every table of the service, in one place, as Alembic sees it.

Constraint names are fixed by convention so that migrations are identical on SQLite and
PostgreSQL and a unique violation can be recognised by name.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Uuid,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are written and read as aware UTC datetimes on every backend.

    SQLite keeps no zone and hands back naive values; without this, comparing them with
    ``datetime.now(UTC)`` would raise, and the audit chain would hash different strings.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime}


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(32), unique=True)  # stored lower-case
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored normalised
    age: Mapped[int] = mapped_column(Integer)
    password_hash: Mapped[str] = mapped_column(String(255))
    roles: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["user"])
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Every access token issued before this Unix time is refused (roles changed, account
    # disabled); kept here so the revocation store can be restored from it.
    tokens_revoked_before: Mapped[int | None] = mapped_column(BigInteger, default=None)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    lockouts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    # The address was proven by a link mailed to it (POST /auth/email/verify).
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # TOTP (RFC 6238): the secret, AEAD-encrypted with BASTION_ENCRYPTION_KEY (never in
    # clear), set at set-up and pending until a code confirms it (``mfa_enabled``).
    totp_secret: Mapped[str | None] = mapped_column(Text, default=None)
    mfa_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The last time step a code was accepted for: a code is never accepted twice (replay),
    # decided by a conditional UPDATE on this column.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class LoginSession(Base):
    """One login: the ``sid`` of every access token and the family of its refresh tokens."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # What the login granted; a refresh may narrow it, never widen it.
    scope: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    # How the session is carried: "bearer" (refresh and access tokens) or "cookie" (a
    # browser's opaque session cookie, kept here only as its SHA-256: ``secret_hash``).
    kind: Mapped[str] = mapped_column(String(8), default="bearer", server_default="bearer")
    secret_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    # Where it was opened and when it was last used (a login, a refresh, a cookie's use at
    # most every tenth of the idle TTL): for the owner to recognise it in GET
    # /auth/sessions, and a cookie session's idle expiry. Access-token use is not
    # recorded: a read stays a read.
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    client_ip: Mapped[str | None] = mapped_column(String(45), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(200), default=None)
    # How the user proved who they are at sign-in (RFC 8176 ``amr``, space-separated):
    # "pwd", "pwd otp" or "pwd mfa". Fixed for the session's life: a refresh never
    # upgrades it.
    amr: Mapped[str] = mapped_column(String(40), default="pwd", server_default="pwd")

    __table_args__ = (Index("ix_sessions_user_id", "user_id"),)


class RefreshToken(Base):
    """Only the SHA-256 of the token is stored; the token itself exists only at the client."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_refresh_tokens_session_id", "session_id"),)


class RecoveryCode(Base):
    """One of a user's single-use recovery codes, kept only as its SHA-256 (the code is
    shown once, at set-up or regeneration). A new set deletes the old one."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_recovery_codes_user_id", "user_id"),)


class MfaChallenge(Base):
    """A password grant that still needs its second factor: the ``mfa_token`` (kept only as
    its SHA-256), bound to the user, single use, five minutes. A wrong code leaves it
    unspent; the grant that completes it spends it with a conditional UPDATE."""

    __tablename__ = "mfa_challenges"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The scope the password grant asked for (None: everything the roles grant).
    scope: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_mfa_challenges_user_id", "user_id"),)


class EmailToken(Base):
    """A mailed link's token (``purpose``: "verify" or "reset"), kept only as its SHA-256;
    single use, expiring; a newer token of the same purpose deletes the older ones. A
    verification token proves only the address it was sent to (``email``)."""

    __tablename__ = "email_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_email_tokens_user_id", "user_id"),)


class OutboxMail(Base):
    """A mail to deliver, written in the transaction of the request that sends it, so a
    request never waits for (or fails on) the mail server. Senders in any process claim a
    row with a lease (``lease_expires_at``), deliver it, and mark it sent; a failure sets
    ``next_attempt_at`` with back-off. ``message_id`` is fixed here, so a resend after a
    crash carries the same ``Message-ID``. The message itself (``content``) is
    AEAD-encrypted with BASTION_ENCRYPTION_KEY (it holds single-use links) and emptied
    once delivered."""

    __tablename__ = "mail_outbox"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    recipient: Mapped[str] = mapped_column(String(320))
    content: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(String(200), default=None)

    __table_args__ = (
        Index("ix_mail_outbox_sent_at_next_attempt_at", "sent_at", "next_attempt_at"),
    )


class RevokedAccessToken(Base):
    """An access token revoked on its own (RFC 7009), kept until it would have expired so
    that the revocation survives a restart of the revocation store."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime]

    __table_args__ = (Index("ix_revoked_access_tokens_expires_at", "expires_at"),)


class SigningKeyRecord(Base):
    """A JWT signing key. The private half never leaves the database and the process."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    private_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    # Set when a newer key takes over signing; the public key stays published until every
    # token it signed has expired.
    retired_at: Mapped[datetime | None] = mapped_column(default=None)


class AuditEvent(Base):
    """One security event; ``hash`` chains it to the event before it (``seq`` - 1)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    occurred_at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(36), default=None)
    subject_id: Mapped[str | None] = mapped_column(String(36), default=None)
    client_ip: Mapped[str | None] = mapped_column(String(45), default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    __table_args__ = (
        Index("ix_audit_events_type", "type"),
        Index("ix_audit_events_subject_id", "subject_id"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
    )


class Note(Base):
    """A user's note. Search indexes live beside it, per backend: a pg_trgm GIN index on
    PostgreSQL (``NOTE_TRIGRAM_INDEXES``), an FTS5 table kept by triggers on SQLite
    (``SQLITE_SEARCH_TABLES``); both are made by migration 0007."""

    __tablename__ = "notes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)  # sanitized HTML, never raw input
    # UTF-8 bytes of the stored title and body, for the per-user quota: summed from the
    # (owner_id, size_bytes) index alone, without reading a single body.
    size_bytes: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_notes_owner_id_created_at", "owner_id", "created_at"),
        Index("ix_notes_owner_id_size_bytes", "owner_id", "size_bytes"),
    )


# Search objects that exist on one backend only and that the models cannot describe (an
# FTS5 virtual table and its shadow tables, expression GIN indexes). The schema comparison
# leaves out exactly these names, and tests check them on their own.
SQLITE_SEARCH_TABLES = (
    "notes_search",
    "notes_search_data",
    "notes_search_idx",
    "notes_search_docsize",
    "notes_search_config",
    "notes_search_content",
    "note_search_keys",
)
NOTE_TRIGRAM_INDEXES = ("ix_notes_title_trgm", "ix_notes_body_trgm")


class NoteShare(Base):
    """Read access to a note for one other user."""

    __tablename__ = "note_shares"

    note_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("notes.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_note_shares_user_id", "user_id"),)


class IdempotencyRecord(Base):
    """One ``Idempotency-Key`` of one user: claimed while its request is in flight, then the
    response of the write it made, recorded in that write's own transaction (so a response
    is here if and only if the write committed). ``bastion.idempotency`` is its one user.

    In flight while ``completed_at`` is NULL; a claim whose ``lease_expires_at`` has passed
    was abandoned (a crash) and may be taken over. Only the holder of ``claim_id`` may
    complete or release it. Rows older than 24 h are no longer answered and are purged."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 (hex) of the method, the path and the raw body bytes of the first request.
    fingerprint: Mapped[str] = mapped_column(String(64))
    claim_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    created_at: Mapped[datetime]
    lease_expires_at: Mapped[datetime]
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)
    response_body: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)


class ServiceSecret(Base):
    """Server-side secrets every process must share (e.g. the pagination-cursor key)."""

    __tablename__ = "service_secrets"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]


class AuditChainHead(Base):
    """A single row locked by every append, so concurrent writers never fork the chain."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    last_hash: Mapped[str] = mapped_column(String(64))
