"""Mailed links: proving an email address, and resetting a forgotten password.

A link carries a random token (256 bits, ``security.secret_tokens``); the database keeps
only its SHA-256 (``EmailToken.token_hash``), so a copy of the table opens no link. A token
is single use (spent by a conditional UPDATE on ``used_at IS NULL``, so of concurrent uses
exactly one wins, on SQLite and PostgreSQL alike), expires (verification: 24 h, reset:
30 min), and proves only the address it was mailed to: once the account's address is
another, it opens nothing. A newer token of one purpose deletes the older ones in the
transaction that creates it, so only the latest mail's link works.

The mail is queued in the outbox (``bastion.mail.outbox``) in the same transaction as the
token and the audit event: the request never waits for the mail server, and either all
three commit or none does. Links point at the console (``BASTION_PUBLIC_URL``, never the
request's ``Host``, which a client chooses) with the token in the fragment, which a browser
sends to no server: it reaches no access log and no ``Referer``.

Enumeration: ``request_reset`` answers the same (nothing: the route's 202) for any
address and does the same work on every path (one write transaction: the account lookup,
the throttle read, the audit append, a mail rendered and encrypted); only a known, enabled,
unthrottled account's mail and token are stored, the others' mail is dropped.

Mail-bombing: one mail per account and purpose per ``MAIL_INTERVAL`` (later requests are
answered alike, audited as ``throttled``), beside the routes' own quota
(``security.ratelimits.MAIL_LIMIT``, ``BASTION_RATE_LIMIT_MAIL``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.clock import Clock, utc_now
from bastion.config import Settings
from bastion.errors import BadRequest, InvalidFields, Unauthenticated
from bastion.identity.freshness import lock_user
from bastion.identity.revocation import Revocation
from bastion.mail.message import build_message, new_message_id, serialize
from bastion.mail.outbox import content_context, enqueue_mail
from bastion.security.encryption import EncryptionKeys
from bastion.security.passwords import PasswordHasher, password_problems
from bastion.security.principal import Principal
from bastion.security.secret_tokens import hash_secret_token, new_secret_token
from bastion.security.tokens import INVALID_TOKEN_DETAIL
from bastion.storage.database import Database
from bastion.storage.tables import EmailToken, User

VERIFY = "verify"
RESET = "reset"
VERIFY_TTL = timedelta(hours=24)
# Short: a reset link is a password for the account until it is used.
RESET_TTL = timedelta(minutes=30)
# At most one mail per account and purpose this often, whoever asks and from wherever.
MAIL_INTERVAL = timedelta(seconds=60)
# The throttle's read on the unknown-address path: no account has this id.
_NOBODY = uuid.UUID(int=0)

VERIFY_SUBJECT = "Confirm your email address"
RESET_SUBJECT = "Reset your password"


class InvalidLink(BadRequest):
    """One answer for every unusable token (unknown, used, expired, replaced, for another
    address, of a disabled account): which it was is in the audit log, not the response."""

    detail = (
        "This link is not valid: it is wrong, already used, expired or replaced by a newer one."
    )


class MailWaker(Protocol):
    """The outbox's sender, as these flows see it: told to look once a mail is committed."""

    def wake(self) -> None: ...


def verify_link(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/app/#/verify-email?token={token}"


def reset_link(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/app/#/reset-password?token={token}"


def verify_text(username: str, email: str, link: str) -> str:
    return (
        f"Hello {username},\n\n"
        f"to confirm that {email} is the address of your bastion account, open this link "
        f"within 24 hours:\n\n{link}\n\n"
        "The link works once.\n\n"
        "If this was not you, ignore this mail: nothing changes unless the link is opened.\n"
    )


def reset_text(username: str, link: str) -> str:
    return (
        f"Hello {username},\n\n"
        "someone asked to reset the password of your bastion account. To choose a new "
        f"password, open this link within 30 minutes:\n\n{link}\n\n"
        "The link works once. Setting a new password signs every session of the account "
        "out.\n\n"
        "If this was not you, ignore this mail: your password stays as it is.\n"
    )


@dataclass(frozen=True, slots=True)
class _FoundToken:
    """A token row and its account's state as one read saw them."""

    token_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    expires_at: datetime
    used: bool
    account_email: str
    username: str
    disabled: bool

    def refusal(self, now: datetime) -> str | None:
        """Why this token opens nothing at ``now`` (the audit's reason), or None."""
        if self.used:
            return "used"
        if self.expires_at <= now:
            return "expired"
        if self.disabled:
            return "disabled"
        if self.email != self.account_email:
            return "email_changed"
        return None


async def _find_token(
    session: AsyncSession, token: str, purpose: str
) -> _FoundToken | None:
    row = (
        await session.execute(
            select(
                EmailToken.id,
                EmailToken.user_id,
                EmailToken.email,
                EmailToken.expires_at,
                EmailToken.used_at,
                User.email,
                User.username,
                User.disabled,
            )
            .join(User, User.id == EmailToken.user_id)
            .where(EmailToken.token_hash == hash_secret_token(token), EmailToken.purpose == purpose)
        )
    ).one_or_none()
    if row is None:
        return None
    token_id, user_id, email, expires_at, used_at, account_email, username, disabled = row
    return _FoundToken(
        token_id=token_id,
        user_id=user_id,
        email=email,
        expires_at=expires_at,
        used=used_at is not None,
        account_email=account_email,
        username=username,
        disabled=disabled,
    )


async def _spend(
    session: AsyncSession, found: _FoundToken, account_email: str, now: datetime
) -> bool:
    """The compare-and-set that makes a token single use: marks it used only while it is
    unused, unexpired and still for the account's address. False when another request
    spent it first (or it expired or was replaced meanwhile): that request won."""
    result = await session.execute(
        update(EmailToken)
        .where(
            EmailToken.id == found.token_id,
            EmailToken.used_at.is_(None),
            EmailToken.expires_at > now,
            EmailToken.email == account_email,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def _claim(session: AsyncSession, found: _FoundToken, now: datetime) -> User | str:
    """The token's account, row-locked, once the token is spent on it; else why not (the
    audit's reason): the account is gone or disabled, or the token was spent meanwhile."""
    user = await lock_user(session, found.user_id)
    if user is None or user.disabled:
        return "disabled"
    if not await _spend(session, found, user.email, now):
        return "used"
    return user


@dataclass(kw_only=True, slots=True)
class EmailFlows:
    settings: Settings
    database: Database
    hasher: PasswordHasher
    revocation: Revocation
    encryption: EncryptionKeys
    mail: MailWaker
    clock: Clock = utc_now

    # -- mailing a link ---------------------------------------------------------------

    async def _throttled(
        self, session: AsyncSession, user_id: uuid.UUID, purpose: str, now: datetime
    ) -> bool:
        """Whether a link of ``purpose`` was mailed to the account within ``MAIL_INTERVAL``."""
        latest = await session.scalar(
            select(EmailToken.created_at)
            .where(EmailToken.user_id == user_id, EmailToken.purpose == purpose)
            .order_by(EmailToken.created_at.desc())
            .limit(1)
        )
        return latest is not None and latest > now - MAIL_INTERVAL

    async def _mail_link(
        self, session: AsyncSession, user: User, purpose: str, now: datetime
    ) -> None:
        """A fresh token for ``user``'s current address, replacing the older ones of
        ``purpose``, and its mail queued: all in the caller's transaction."""
        await session.execute(
            delete(EmailToken)
            .where(EmailToken.user_id == user.id, EmailToken.purpose == purpose)
            .execution_options(synchronize_session=False)
        )
        token = new_secret_token()
        ttl = VERIFY_TTL if purpose == VERIFY else RESET_TTL
        session.add(
            EmailToken(
                id=uuid.uuid4(),
                user_id=user.id,
                purpose=purpose,
                token_hash=hash_secret_token(token),
                email=user.email,
                created_at=now,
                expires_at=now + ttl,
            )
        )
        await session.flush()
        if purpose == VERIFY:
            subject = VERIFY_SUBJECT
            link = verify_link(self.settings.public_url, token)
            text = verify_text(user.username, user.email, link)
        else:
            subject = RESET_SUBJECT
            text = reset_text(user.username, reset_link(self.settings.public_url, token))
        await enqueue_mail(
            session,
            keys=self.encryption,
            sender=self.settings.mail_from,
            recipient=user.email,
            subject=subject,
            text=text,
            now=now,
        )

    async def request_verification(self, principal: Principal, audit: AuditContext) -> None:
        """Mails a verification link to the signed-in account's current address, unless it
        is verified already or a link went out within ``MAIL_INTERVAL`` (answered alike)."""
        audit = audit.as_actor(principal.user_id)
        user_id = uuid.UUID(principal.user_id)
        now = self.clock()
        event = AuditEventType.EMAIL_VERIFICATION_REQUESTED
        async with self.database.transaction() as session:
            user = await lock_user(session, user_id)
            if user is None or user.disabled:
                raise Unauthenticated(INVALID_TOKEN_DETAIL, token_presented=True)
            if user.email_verified:
                mailed = False
                await audit.record(
                    session, event, Outcome.FAILURE, subject=str(user_id),
                    reason="already_verified",
                )
            elif await self._throttled(session, user_id, VERIFY, now):
                mailed = False
                await audit.record(
                    session, event, Outcome.DENIED, subject=str(user_id), reason="throttled"
                )
            else:
                mailed = True
                await self._mail_link(session, user, VERIFY, now)
                await audit.record(session, event, Outcome.SUCCESS, subject=str(user_id))
        if mailed:
            self.mail.wake()

    async def request_reset(self, email: str, audit: AuditContext) -> None:
        """Mails a reset link if ``email`` is an enabled account's address; returns the same
        (nothing), after the same transaction, whatever the address is.

        Every path runs the account lookup, the throttle read and the audit append in one
        write transaction, and renders and encrypts a mail; only the mailing path stores the
        token and the outbox row (the others drop a decoy: ``_decoy_reset_mail``). An
        unknown address is audited without the address (the log would otherwise collect
        every address anyone typed), a known one with the account as subject."""
        now = self.clock()
        event = AuditEventType.PASSWORD_RESET_REQUESTED
        async with self.database.transaction() as session:
            user: User | None = await session.scalar(
                select(User).where(User.email == email).with_for_update()
            )
            throttled = await self._throttled(
                session, user.id if user is not None else _NOBODY, RESET, now
            )
            mailed = user is not None and not user.disabled and not throttled
            if not mailed:
                await self._decoy_reset_mail(session, email, now)
            if user is None:
                await audit.record(session, event, Outcome.FAILURE, reason="unknown_address")
            elif user.disabled:
                await audit.record(
                    session, event, Outcome.FAILURE, subject=str(user.id), reason="disabled"
                )
            elif throttled:
                await audit.record(
                    session, event, Outcome.DENIED, subject=str(user.id), reason="throttled"
                )
            else:
                await self._mail_link(session, user, RESET, now)
                await audit.record(session, event, Outcome.SUCCESS, subject=str(user.id))
        if mailed:
            self.mail.wake()

    async def _decoy_reset_mail(self, session: AsyncSession, email: str, now: datetime) -> None:
        """The mailing path's work without its effect, for the paths that mail nothing, so
        that no path is measurably faster: the same DELETE (of no row), a token drawn and
        hashed, the mail rendered, built and encrypted, then dropped. What is left apart is
        the two INSERTs of the token and the outbox row (tests/e2e/test_email_flows.py
        measures the difference)."""
        await session.execute(
            delete(EmailToken)
            .where(EmailToken.user_id == _NOBODY, EmailToken.purpose == RESET)
            .execution_options(synchronize_session=False)
        )
        token = new_secret_token()
        hash_secret_token(token)
        message_id = new_message_id(self.settings.mail_from)
        message = build_message(
            sender=self.settings.mail_from,
            recipient=email,
            subject=RESET_SUBJECT,
            text=reset_text("-", reset_link(self.settings.public_url, token)),
            message_id=message_id,
            date=now,
        )
        self.encryption.encrypt(serialize(message), context=content_context(message_id))

    # -- opening a link ---------------------------------------------------------------

    async def verify_email(self, token: str, audit: AuditContext) -> None:
        """Marks the address the token was mailed to as verified, if it is still the
        account's; the token is spent. Every refusal is committed to the audit log, then
        raised as ``InvalidLink``."""
        now = self.clock()
        event = AuditEventType.EMAIL_VERIFIED
        async with self.database.transaction() as session:
            found = await _find_token(session, token, VERIFY)
            refusal: str | None = "unknown_token" if found is None else found.refusal(now)
            if found is not None and refusal is None:
                claimed = await _claim(session, found, now)
                if isinstance(claimed, str):
                    refusal = claimed
                else:
                    claimed.email_verified = True
                    claimed.updated_at = now
                    await session.flush()
            subject = str(found.user_id) if found is not None else None
            if refusal is None:
                # The link proved the holder is the account's: they act as its user.
                await audit.as_actor(subject).record(
                    session, event, Outcome.SUCCESS, subject=subject
                )
            else:
                # Whoever presented a refused token proved nothing: not the account's actor.
                await audit.record(
                    session, event, Outcome.FAILURE, subject=subject, reason=refusal
                )
        if refusal is not None:
            raise InvalidLink

    async def reset_password(
        self, token: str, new_password: str, audit: AuditContext
    ) -> None:
        """Sets the password of the token's account, revokes every session of it and spends
        the token. Does not sign anyone in, and leaves the lockout state (and MFA) as it is:
        a locked account stays locked until its lock ends, as it would for a login.

        ``freshness``' three steps: the token and account are read; the policy check and the
        slow Argon2id hash run outside any transaction; then, on the locked user row, the
        token is spent by compare-and-set, the hash written and the sessions revoked, so of
        concurrent uses of one token exactly one sets its password."""
        async with self.database.read() as session:
            found = await _find_token(session, token, RESET)
        refusal = "unknown_token" if found is None else found.refusal(self.clock())
        if found is None or refusal is not None:
            await self._refuse_reset(found, refusal or "unknown_token", audit)
            raise InvalidLink
        problems = password_problems(
            new_password, username=found.username, email=found.account_email
        )
        if problems:
            raise InvalidFields(
                [{"loc": ["body", "new_password"], "msg": message} for message in problems]
            )
        new_hash = await self.hasher.hash(new_password)
        event = AuditEventType.PASSWORD_RESET_COMPLETED
        async with self.database.transaction() as session:
            now = self.clock()
            claimed = await _claim(session, found, now)
            if isinstance(claimed, str):
                refusal = claimed
            else:
                # Only the hash: failed_logins, locked_until and lockouts are the login's.
                claimed.password_hash = new_hash
                claimed.updated_at = now
                await session.flush()
                await self.revocation.revoke_live_sessions(
                    session, claimed.id, reason="password_reset"
                )
            if refusal is None:
                await audit.as_actor(str(found.user_id)).record(
                    session, event, Outcome.SUCCESS, subject=str(found.user_id)
                )
            else:
                await audit.record(
                    session, event, Outcome.FAILURE, subject=str(found.user_id), reason=refusal
                )
        if refusal is not None:
            raise InvalidLink

    async def _refuse_reset(
        self, found: _FoundToken | None, reason: str, audit: AuditContext
    ) -> None:
        subject = str(found.user_id) if found is not None else None
        await audit.record_detached(
            self.database, AuditEventType.PASSWORD_RESET_COMPLETED, Outcome.FAILURE,
            subject=subject, reason=reason,
        )

