"""Managing an account's second factor: TOTP set-up, confirmation, turning it off, and
renewing the recovery codes.

Every step that needs the password follows ``freshness``: the password is verified outside
any transaction (Argon2id is slow), then the decision is taken again on the row locked by
the transaction that commits it. A wrong password or code counts toward the lockout and
commits although the request fails, so a stolen session is no free password or code oracle.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from urllib.parse import urlsplit

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.clock import Clock, utc_now
from bastion.config import Settings
from bastion.errors import BadRequest, Conflict, DomainError, Unauthenticated
from bastion.identity.freshness import (
    AccountState,
    lock_account,
    read_account,
    verify_unless_locked,
)
from bastion.identity.lockout import Lockout
from bastion.identity.revocation import Revocation
from bastion.identity.schemas import TotpSetup
from bastion.identity.second_factor import SecondFactorCheck, totp_context
from bastion.security.encryption import EncryptionKeys
from bastion.security.passwords import PasswordHasher
from bastion.security.principal import Principal
from bastion.security.recovery_codes import hash_recovery_code, new_recovery_codes
from bastion.security.tokens import INVALID_TOKEN_DETAIL
from bastion.security.totp import new_totp_secret, provisioning_uri, qr_code_data_uri
from bastion.storage.database import Database
from bastion.storage.tables import RecoveryCode, User

_Result = TypeVar("_Result")
# Decides on the locked account, inside the transaction: a value, or the refusal to raise
# once the transaction (with the failure it counted) has committed.
_Settle = Callable[[AsyncSession, AccountState, datetime], Awaitable["_Result | DomainError"]]


class WrongCredentials(BadRequest):
    detail = "The password or the code is not correct."


class WrongCode(BadRequest):
    detail = "The code is not correct."


class MfaAlreadyOn(Conflict):
    detail = "A second factor is already on for this account."


class NoSetupPending(Conflict):
    detail = "There is no TOTP set-up to confirm: start one with POST /auth/mfa/totp."


class MfaNotOn(Conflict):
    detail = "No second factor is on for this account."


class _Stale:
    """The hash the password was verified against changed meanwhile: verify again."""


_STALE = _Stale()


@dataclass(kw_only=True, slots=True)
class MfaEnrolment:
    settings: Settings
    database: Database
    hasher: PasswordHasher
    lockout: Lockout
    revocation: Revocation
    factors: SecondFactorCheck
    keys: EncryptionKeys
    clock: Clock = utc_now

    @property
    def issuer_label(self) -> str:
        """What authenticator apps show the account under: the service's host name."""
        return urlsplit(self.settings.public_url).hostname or "bastion"

    async def begin(self, principal: Principal, password: str, audit: AuditContext) -> TotpSetup:
        """A new TOTP secret, pending until ``confirm``; a set-up begun again replaces it."""
        secret = new_totp_secret()

        async def settle(
            session: AsyncSession, fresh: AccountState, now: datetime
        ) -> TotpSetup | DomainError:
            if fresh.mfa_enabled:
                return MfaAlreadyOn()
            stored = self.keys.encrypt(secret, context=totp_context(fresh.user_id))
            await session.execute(
                update(User)
                .where(User.id == fresh.user_id, User.mfa_enabled.is_(False))
                .values(totp_secret=stored, totp_last_step=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            uri = provisioning_uri(secret, account=fresh.username, issuer=self.issuer_label)
            return TotpSetup(secret=secret, otpauth_uri=uri, qr_code=qr_code_data_uri(uri))

        return await self._with_password(principal, password, audit, settle)

    async def confirm(self, principal: Principal, otp: str, audit: AuditContext) -> list[str]:
        """A code of the pending secret turns MFA on; returns the recovery codes (shown
        only now). Every other session of the account ends; this one keeps the methods it
        signed in with (confirming is no sign-in with the new factor)."""
        user_id = uuid.UUID(principal.user_id)
        async with self.database.transaction() as session:
            now = self.clock()
            fresh = await lock_account(session, user_id)
            settled = await self._settle_confirm(session, principal, fresh, otp, now, audit)
        if isinstance(settled, DomainError):
            raise settled
        return settled

    async def _settle_confirm(
        self,
        session: AsyncSession,
        principal: Principal,
        fresh: AccountState | None,
        otp: str,
        now: datetime,
        audit: AuditContext,
    ) -> list[str] | DomainError:
        if fresh is None or fresh.disabled:
            return Unauthenticated(INVALID_TOKEN_DETAIL, token_presented=True)
        if fresh.mfa_enabled:
            return MfaAlreadyOn()
        if fresh.totp_secret is None:
            return NoSetupPending()
        if fresh.locked(now):
            await self._audit_failure(session, fresh, audit, "locked")
            return WrongCode()
        if not await self.factors.accept_totp(session, fresh, otp, now):
            await self.factors.count_failure(session, fresh, now, audit, "wrong_otp")
            return WrongCode()
        turned_on = await session.execute(
            update(User)
            .where(
                User.id == fresh.user_id,
                User.mfa_enabled.is_(False),
                User.totp_secret == fresh.totp_secret,
            )
            .values(mfa_enabled=True, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if turned_on.rowcount != 1:  # type: ignore[attr-defined]
            return NoSetupPending()  # cannot happen under the row lock
        codes = await self._replace_recovery_codes(session, fresh.user_id, now)
        await self.revocation.revoke_live_sessions(
            session, fresh.user_id, reason="mfa_enabled", keep=uuid.UUID(principal.session_id)
        )
        await audit.record(
            session, AuditEventType.MFA_ENABLED, Outcome.SUCCESS,
            subject=str(fresh.user_id), method="totp",
        )
        return codes

    async def disable(
        self, principal: Principal, password: str, otp: str, audit: AuditContext
    ) -> None:
        """MFA off: the secret and the recovery codes are deleted."""

        async def settle(
            session: AsyncSession, fresh: AccountState, now: datetime
        ) -> DomainError | None:
            refusal = await self._require_code(session, fresh, otp, now, audit)
            if refusal is not None:
                return refusal
            await session.execute(
                update(User)
                .where(User.id == fresh.user_id)
                .values(mfa_enabled=False, totp_secret=None, totp_last_step=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == fresh.user_id))
            await audit.record(
                session, AuditEventType.MFA_DISABLED, Outcome.SUCCESS,
                subject=str(fresh.user_id), method="totp",
            )
            return None

        await self._with_password(principal, password, audit, settle)

    async def renew_recovery_codes(
        self, principal: Principal, password: str, otp: str, audit: AuditContext
    ) -> list[str]:
        """A new set of recovery codes; every code of the old set stops working."""

        async def settle(
            session: AsyncSession, fresh: AccountState, now: datetime
        ) -> list[str] | DomainError:
            refusal = await self._require_code(session, fresh, otp, now, audit)
            if refusal is not None:
                return refusal
            codes = await self._replace_recovery_codes(session, fresh.user_id, now)
            await audit.record(
                session, AuditEventType.RECOVERY_CODES_REGENERATED, Outcome.SUCCESS,
                subject=str(fresh.user_id),
            )
            return codes

        return await self._with_password(principal, password, audit, settle)

    # Shared steps -----------------------------------------------------------------------

    async def _require_code(
        self,
        session: AsyncSession,
        fresh: AccountState,
        otp: str,
        now: datetime,
        audit: AuditContext,
    ) -> DomainError | None:
        if not fresh.mfa_enabled:
            return MfaNotOn()
        if not await self.factors.accept_totp(session, fresh, otp, now):
            await self.factors.count_failure(session, fresh, now, audit, "wrong_otp")
            return WrongCredentials()
        return None

    async def _replace_recovery_codes(
        self, session: AsyncSession, user_id: uuid.UUID, now: datetime
    ) -> list[str]:
        codes = new_recovery_codes()
        await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        session.add_all(
            RecoveryCode(user_id=user_id, code_hash=hash_recovery_code(code), created_at=now)
            for code in codes
        )
        return codes

    async def _audit_failure(
        self, session: AsyncSession, fresh: AccountState, audit: AuditContext, reason: str
    ) -> None:
        await audit.record(
            session, AuditEventType.MFA_FAILURE, Outcome.FAILURE,
            subject=str(fresh.user_id), reason=reason,
        )

    async def _with_password(
        self,
        principal: Principal,
        password: str,
        audit: AuditContext,
        settle: _Settle[_Result],
    ) -> _Result:
        """``settle`` on the locked account once ``password`` is verified; a wrong password
        is counted toward the lockout and audited (committed), then refused."""
        audit = audit.as_actor(principal.user_id)
        user_id = uuid.UUID(principal.user_id)
        for _attempt in range(2):
            seen = await read_account(self.database, User.id == user_id)
            if seen is None or seen.disabled:
                raise Unauthenticated(INVALID_TOKEN_DETAIL, token_presented=True)
            verification = await verify_unless_locked(self.hasher, seen, password, self.clock())
            async with self.database.transaction() as session:
                now = self.clock()
                fresh = await lock_account(session, user_id)
                settled: _Result | DomainError | _Stale
                if fresh is None or fresh.disabled:
                    settled = Unauthenticated(INVALID_TOKEN_DETAIL, token_presented=True)
                elif fresh.password_hash != seen.password_hash:
                    settled = _STALE  # changed during the hash: verify against the new one
                elif verification is None or fresh.locked(now):
                    await self._audit_failure(session, fresh, audit, "locked")
                    settled = WrongCredentials()
                elif not verification.valid:
                    await self.factors.count_failure(session, fresh, now, audit, "wrong_password")
                    settled = WrongCredentials()
                else:
                    settled = await settle(session, fresh, now)
            if isinstance(settled, _Stale):
                continue
            if isinstance(settled, DomainError):
                raise settled
            return settled
        raise WrongCredentials  # changed twice under this request: refuse, do not loop
