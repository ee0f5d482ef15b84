"""/auth/mfa: the account's second factor (TOTP, RFC 6238) and its recovery codes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Request, Response

from bastion.audit.context import AuditContext
from bastion.dependencies import authenticated
from bastion.identity.schemas import (
    ReauthenticatedRequest,
    RecoveryCodes,
    TotpConfirmRequest,
    TotpSetup,
    TotpSetupRequest,
)
from bastion.middleware.body_limit import SMALL_BODY_BYTES
from bastion.routing import service_router
from bastion.security.principal import Principal
from bastion.security.ratelimits import LOGIN_LIMIT
from bastion.services import services_of

router = service_router("identity")

# Each of these checks a password or guesses a code: the login quota, per address.
Reauthenticating = Annotated[Principal, authenticated(rate_limit=LOGIN_LIMIT)]
_WRONG: dict[int | str, dict[str, Any]] = {
    400: {"description": "The password or the code is not correct (counted toward the "
                         "account's lockout)."}
}


@router.post(
    "/auth/mfa/totp",
    responses={**_WRONG, 401: {}, 409: {"description": "A second factor is already on."},
               422: {}},
    max_body_size=SMALL_BODY_BYTES,
)
async def begin_totp(
    body: TotpSetupRequest, principal: Reauthenticating, request: Request
) -> TotpSetup:
    """Start a TOTP set-up: a new secret (and its QR code), pending until confirmed with a
    code. Starting again replaces a pending secret."""
    enrolment = services_of(request.app).mfa
    return await enrolment.begin(principal, body.password, AuditContext.of(request))


@router.post(
    "/auth/mfa/totp/confirm",
    responses={400: {"description": "The code is not correct (counted toward the lockout)."},
               401: {}, 409: {"description": "Already on, or no set-up pending."}, 422: {}},
    max_body_size=SMALL_BODY_BYTES,
)
async def confirm_totp(
    body: TotpConfirmRequest, principal: Reauthenticating, request: Request
) -> RecoveryCodes:
    """Turn MFA on with a code of the pending secret. Returns ten single-use recovery
    codes, shown only now. Every other session of the account is signed out."""
    enrolment = services_of(request.app).mfa
    codes = await enrolment.confirm(principal, body.otp, AuditContext.of(request))
    return RecoveryCodes(recovery_codes=codes)


@router.delete(
    "/auth/mfa/totp",
    status_code=204,
    response_class=Response,
    responses={**_WRONG, 401: {}, 409: {"description": "No second factor is on."}, 422: {}},
    max_body_size=SMALL_BODY_BYTES,
)
async def disable_totp(
    body: ReauthenticatedRequest, principal: Reauthenticating, request: Request
) -> None:
    """Turn MFA off (the password and a current code): the secret and the recovery codes
    are deleted."""
    enrolment = services_of(request.app).mfa
    await enrolment.disable(principal, body.password, body.otp, AuditContext.of(request))


@router.post(
    "/auth/mfa/recovery-codes",
    responses={**_WRONG, 401: {}, 409: {"description": "No second factor is on."}, 422: {}},
    max_body_size=SMALL_BODY_BYTES,
)
async def renew_recovery_codes(
    body: ReauthenticatedRequest, principal: Reauthenticating, request: Request
) -> RecoveryCodes:
    """A new set of ten recovery codes (the password and a current code); the old set
    stops working."""
    enrolment = services_of(request.app).mfa
    codes = await enrolment.renew_recovery_codes(
        principal, body.password, body.otp, AuditContext.of(request)
    )
    return RecoveryCodes(recovery_codes=codes)
