"""Checking a second factor inside the transaction that decides on the locked account.

A TOTP code or a recovery code is cheap to check (an HMAC, a SHA-256), so unlike the
password it is checked on the row-locked account itself, and every effect is a conditional
write decided by the database:

- a TOTP code is accepted only for a time step after the last one accepted
  (``UPDATE users SET totp_last_step = :step WHERE totp_last_step < :step``), so a code
  seen by an eavesdropper, or sent twice at once, works once;
- a recovery code is spent by ``UPDATE recovery_codes SET used_at = now WHERE used_at IS
  NULL``: of two concurrent uses exactly one succeeds.

A wrong code counts toward the account's lockout, like a wrong password.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.identity.freshness import AccountState
from bastion.identity.lockout import Lockout
from bastion.security.encryption import DecryptionFailed, EncryptionKeys
from bastion.security.recovery_codes import hash_recovery_code, normalise_recovery_code
from bastion.security.totp import accepted_step
from bastion.storage.database import StorageUnavailable
from bastion.storage.outages import Outage
from bastion.storage.tables import RecoveryCode, User

PASSWORD_ONLY: tuple[str, ...] = ("pwd",)
WITH_TOTP: tuple[str, ...] = ("pwd", "otp")
# RFC 8176 has no "recovery code"; "mfa" says several factors were used without naming one.
WITH_RECOVERY_CODE: tuple[str, ...] = ("pwd", "mfa")


@dataclass(frozen=True, slots=True)
class FactorProof:
    """What a sign-in sent besides the password: a TOTP code or a recovery code."""

    otp: str | None = None
    recovery_code: str | None = None


def totp_context(user_id: uuid.UUID) -> str:
    """The associated data a user's TOTP secret is encrypted under: bound to that row."""
    return f"totp:{user_id}"


def decrypt_totp_secret(keys: EncryptionKeys, user_id: uuid.UUID, stored: str) -> str:
    """The secret in clear. When it decrypts under no configured key (the key it was
    written with was dropped from ``BASTION_ENCRYPTION_KEY``), the sign-in cannot be
    decided: a 503 whose log line names the cause, never a wrong-code answer that would
    count toward the user's lockout."""
    try:
        return keys.decrypt(stored, context=totp_context(user_id))
    except DecryptionFailed:
        raise StorageUnavailable(
            "a TOTP secret decrypts under no configured key",
            outage=Outage(dependency="encryption_key", error="DecryptionFailed"),
        ) from None


@dataclass(kw_only=True, slots=True)
class SecondFactorCheck:
    keys: EncryptionKeys
    lockout: Lockout

    async def verify(
        self,
        session: AsyncSession,
        account: AccountState,
        proof: FactorProof,
        now: datetime,
        audit: AuditContext,
        *,
        allow_recovery_code: bool = True,
    ) -> tuple[str, ...] | None:
        """The methods proven (``amr``), or None after counting the failure and auditing
        it. ``account`` is the row locked by the caller's transaction."""
        if proof.otp is not None:
            if await self.accept_totp(session, account, proof.otp, now):
                return WITH_TOTP
            reason = "wrong_otp"
        elif proof.recovery_code is not None and allow_recovery_code:
            if await self._spend_recovery_code(session, account, proof.recovery_code, now, audit):
                return WITH_RECOVERY_CODE
            reason = "wrong_recovery_code"
        else:
            reason = "no_code"
        await self.count_failure(session, account, now, audit, reason)
        return None

    async def count_failure(
        self,
        session: AsyncSession,
        account: AccountState,
        now: datetime,
        audit: AuditContext,
        reason: str,
    ) -> None:
        counted = await self.lockout.count_failure(session, account.user_id, now, audit)
        await audit.record(
            session, AuditEventType.MFA_FAILURE, Outcome.FAILURE,
            subject=str(account.user_id), reason=reason if counted else "locked",
        )

    async def accept_totp(
        self, session: AsyncSession, account: AccountState, code: str, now: datetime
    ) -> bool:
        """Whether ``code`` is the account's TOTP code for a step after the last accepted
        one; when it is, that step becomes the last accepted (a conditional write)."""
        if account.totp_secret is None:
            return False
        secret = decrypt_totp_secret(self.keys, account.user_id, account.totp_secret)
        step = accepted_step(secret, code, at=now, after_step=account.totp_last_step)
        if step is None:
            return False
        claimed = await session.execute(
            update(User)
            .where(
                User.id == account.user_id,
                or_(User.totp_last_step.is_(None), User.totp_last_step < step),
            )
            .values(totp_last_step=step)
            .execution_options(synchronize_session=False)
        )
        return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]

    async def _spend_recovery_code(
        self,
        session: AsyncSession,
        account: AccountState,
        code: str,
        now: datetime,
        audit: AuditContext,
    ) -> bool:
        normalised = normalise_recovery_code(code)
        if normalised is None:
            return False
        spent = await session.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == account.user_id,
                RecoveryCode.code_hash == hash_recovery_code(normalised),
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        if spent.rowcount != 1:  # type: ignore[attr-defined]
            return False
        remaining = await session.scalar(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == account.user_id, RecoveryCode.used_at.is_(None))
        )
        await audit.as_actor(str(account.user_id)).record(
            session, AuditEventType.RECOVERY_CODE_USED, Outcome.SUCCESS,
            subject=str(account.user_id), remaining=int(remaining or 0),
        )
        return True
