"""The one container of what routes and policies use, set once on ``app.state.bastion``.

Routes and policies read it through ``services_of`` (and the ``Annotated`` aliases built on
it), never through loose ``app.state`` attributes, so an app that is not built by
``create_app`` works as soon as it installs a ``Services`` (``bastion.app.build_services``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Request

if TYPE_CHECKING:
    from bastion.admin.service import AdminService
    from bastion.authentication import Authenticator
    from bastion.config import Settings
    from bastion.identity.accounts import Accounts
    from bastion.identity.cookie_sessions import CookieSessions
    from bastion.identity.email_flows import EmailFlows
    from bastion.identity.grants import Grants
    from bastion.identity.mfa import MfaEnrolment
    from bastion.identity.revocation import Revocation
    from bastion.identity.sessions import Sessions
    from bastion.mail.sender import MailSender
    from bastion.ratelimiting import RateLimiter
    from bastion.security.cursors import CursorCodec
    from bastion.security.encryption import EncryptionKeys
    from bastion.storage.database import Database
    from bastion.storage.signing_keys import KeyRingHolder

STATE_KEY = "bastion"


class ServicesNotInstalled(RuntimeError):
    def __init__(
        self,
        message: str = (
            "bastion's services are not installed on this app: call "
            "bastion.app.install_services(app, services) before serving it"
        ),
    ) -> None:
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    database: Database
    keys: KeyRingHolder
    authenticator: Authenticator
    rate_limiter: RateLimiter
    accounts: Accounts
    grants: Grants
    revocation: Revocation
    admin: AdminService
    sessions: Sessions
    cookie_sessions: CookieSessions
    mfa: MfaEnrolment
    # Mail leaves through the outbox; its sender runs from start to stop (bastion.mail).
    mail: MailSender
    # BASTION_ENCRYPTION_KEY's keys, for secrets at rest (TOTP secrets, queued mail).
    encryption: EncryptionKeys
    # Mailed links: email verification and password reset.
    email_flows: EmailFlows
    # Signed pagination cursors; the secret lives in the database, so it is set at start.
    cursor_codec: CursorCodec | None = None

    @property
    def cursors(self) -> CursorCodec:
        if self.cursor_codec is None:
            # Installed but not started: the cursor secret is read from the database.
            raise ServicesNotInstalled(
                "bastion's services are not started: await bastion.app.start_services(app) "
                "in the app's lifespan"
            )
        return self.cursor_codec


def services_of(app: FastAPI) -> Services:
    services: Services | None = getattr(app.state, STATE_KEY, None)
    if services is None:
        raise ServicesNotInstalled
    return services


async def _services(request: Request) -> Services:
    return services_of(request.app)


AppServices = Annotated[Services, Depends(_services)]
