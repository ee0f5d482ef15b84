"""Request and response bodies of /auth, one class per direction (no mass assignment)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
)

from bastion.schemas import StrictModel

USERNAME_PATTERN = r"^[a-z0-9_.-]{3,32}$"


# Lower-cased before the pattern applies, so "Alice" registers as "alice" and a second
# "ALICE" collides with it.
Username = Annotated[
    str,
    BeforeValidator(lambda value: value.lower() if isinstance(value, str) else value),
    StringConstraints(pattern=USERNAME_PATTERN),
]


def _normalise_email(value: str) -> str:
    # email-validator already lower-cased the domain; addresses that differ only in the
    # case of the local part are the same mailbox in practice, so they are one account.
    return value.lower()


Email = Annotated[EmailStr, AfterValidator(_normalise_email)]
# Length is checked by the password policy (after NFKC); this only stops absurd bodies.
PasswordField = Annotated[str, Field(min_length=1, max_length=1024)]


class RegisterRequest(StrictModel):
    username: Username
    email: Email
    password: PasswordField
    age: int = Field(ge=13, le=130, strict=True)


class PasswordChangeRequest(StrictModel):
    current_password: PasswordField
    new_password: PasswordField


class UserPublic(BaseModel):
    """What any caller may see of an account: nothing secret, no lockout state."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    email: str
    age: int
    roles: list[str]
    created_at: datetime


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the RFC 6750 token type)
    expires_in: int
    refresh_token: str
    scope: str


class OAuthError(BaseModel):
    """RFC 6749 §5.2: the token endpoint's own error format (not problem details)."""

    error: str
    error_description: str


class JsonWebKeySet(BaseModel):
    keys: list[dict[str, str]]
