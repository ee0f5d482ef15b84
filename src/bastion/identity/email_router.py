"""Email verification and password reset: thin routes over ``EmailFlows``.

Each answer is fixed by the route, never by what the flow found: the two routes that mail
answer 202 with an empty body whether a mail went out or not (the unknown address, the
throttled account and the verified one look like the rest), and the two that open a link
answer 204 or the one 400 of ``InvalidLink``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Request, Response

from bastion.audit.context import AuditContext
from bastion.dependencies import authenticated, public
from bastion.identity.email_schemas import (
    ForgotPasswordRequest,
    ResetPasswordRequest,
    VerifyEmailRequest,
)
from bastion.middleware.body_limit import SMALL_BODY_BYTES
from bastion.routing import service_router
from bastion.security.principal import Principal
from bastion.security.ratelimits import MAIL_LIMIT
from bastion.services import services_of

router = service_router("identity")

# The mail quota (BASTION_RATE_LIMIT_MAIL): per client address on forgot-password, per
# user on the verification request.
MailRequester = Annotated[Principal, authenticated(rate_limit=MAIL_LIMIT)]

_ACCEPTED = {"description": "Accepted: a mail is queued, or there is nothing to mail; the "
             "answer is the same either way (an empty body)."}
_BAD_LINK = {"description": "The token is unknown, used, expired, replaced by a newer one, "
             "or for an address that is no longer the account's (problem details)."}


@router.post(
    "/auth/email/verification",
    status_code=202,
    response_class=Response,
    responses={202: _ACCEPTED, 401: {}},
    max_body_size=SMALL_BODY_BYTES,
)
async def request_email_verification(principal: MailRequester, request: Request) -> Response:
    """Mail a verification link to the signed-in account's address (valid 24 hours). None
    is sent when the address is verified already or a link went out in the last minute."""
    await services_of(request.app).email_flows.request_verification(
        principal, AuditContext.of(request)
    )
    return Response(status_code=202)


@router.post(
    "/auth/email/verify",
    status_code=204,
    response_class=Response,
    responses={400: _BAD_LINK, 422: {}},
    dependencies=[public()],
    max_body_size=SMALL_BODY_BYTES,
)
async def verify_email(body: VerifyEmailRequest, request: Request) -> None:
    """Open a verification link: the address it was mailed to is now verified, if it is
    still the account's. The token works once."""
    await services_of(request.app).email_flows.verify_email(body.token, AuditContext.of(request))


@router.post(
    "/auth/password/forgot",
    status_code=202,
    response_class=Response,
    responses={202: _ACCEPTED, 422: {}},
    dependencies=[public(rate_limit=MAIL_LIMIT)],
    max_body_size=SMALL_BODY_BYTES,
)
async def forgot_password(body: ForgotPasswordRequest, request: Request) -> Response:
    """Mail a password-reset link (valid 30 minutes) if the address is an account's. The
    answer is the same, in the same time, for any address: it tells nobody which exist."""
    await services_of(request.app).email_flows.request_reset(body.email, AuditContext.of(request))
    return Response(status_code=202)


@router.post(
    "/auth/password/reset",
    status_code=204,
    response_class=Response,
    responses={400: _BAD_LINK, 422: {}},
    dependencies=[public()],
    max_body_size=SMALL_BODY_BYTES,
)
async def reset_password(body: ResetPasswordRequest, request: Request) -> None:
    """Open a reset link: set a new password (the registration's policy applies) and end
    every session of the account. Nobody is signed in; sign in with the new password."""
    await services_of(request.app).email_flows.reset_password(
        body.token, body.new_password, AuditContext.of(request)
    )
