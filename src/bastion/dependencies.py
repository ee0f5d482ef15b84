"""``Annotated`` aliases that routes declare; each is an ``async def`` (no threadpool hop)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.openapi.models import OAuthFlowPassword, OAuthFlows
from fastapi.security import OAuth2
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.authentication import Authenticator
from bastion.config import Settings
from bastion.errors import Unauthenticated
from bastion.middleware.access_log import USER_ID_SCOPE_KEY
from bastion.security.permissions import ALL_PERMISSIONS
from bastion.security.principal import Principal
from bastion.security.tokens import INVALID_TOKEN_DETAIL, InvalidToken
from bastion.storage import Database

TOKEN_URL = "/auth/token"  # noqa: S105 (a path, not a secret)
OAUTH2_SCHEME_NAME = "OAuth2PasswordBearer"


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def _transaction(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.database
    async with database.transaction() as session:
        yield session


class BearerToken(OAuth2):
    """Resolves ``Authorization: Bearer`` to a ``Principal``, or answers 401.

    A subclass of FastAPI's ``OAuth2`` so the OpenAPI document declares the password flow
    and Swagger UI's "Authorize" works, while staying one async dependency per request.
    """

    def __init__(self) -> None:
        super().__init__(
            flows=OAuthFlows(
                password=OAuthFlowPassword(
                    tokenUrl=TOKEN_URL,
                    scopes={permission: permission for permission in sorted(ALL_PERMISSIONS)},
                )
            ),
            scheme_name=OAUTH2_SCHEME_NAME,
            auto_error=False,
        )

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        header = request.headers.get("authorization")
        if not header:
            raise Unauthenticated
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(token_presented=True)
        authenticator: Authenticator = request.app.state.authenticator
        try:
            principal = await authenticator.authenticate(token.strip())
        except InvalidToken:
            raise Unauthenticated(INVALID_TOKEN_DETAIL, token_presented=True) from None
        request.scope[USER_ID_SCOPE_KEY] = principal.user_id
        return principal


bearer_token = BearerToken()

AppSettings = Annotated[Settings, Depends(_settings)]
AppDatabase = Annotated[Database, Depends(_database)]
# scope="function": the transaction commits when the route returns, before the response is
# sent, so a failed commit is reported to the client instead of a success it never got.
DbSession = Annotated[AsyncSession, Depends(_transaction, scope="function")]
CurrentPrincipal = Annotated[Principal, Depends(bearer_token)]
