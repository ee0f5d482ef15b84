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
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.networks import validate_email
from pydantic_core import PydanticCustomError

from bastion.schemas import StrictModel
from bastion.security.passwords import MAX_LENGTH as PASSWORD_MAX_LENGTH
from bastion.security.passwords import MIN_LENGTH as PASSWORD_MIN_LENGTH

USERNAME_PATTERN = r"^[a-z0-9_.-]{3,32}$"
# What a client may send: upper case is folded to lower case before USERNAME_PATTERN applies.
USERNAME_INPUT_PATTERN = r"^[A-Za-z0-9_.-]{3,32}$"


def _ascii_lower(value: object) -> object:
    # Only ASCII is folded: str.lower() maps the Kelvin sign to "k" and dotted capital I to
    # two characters, which would let a name the documented pattern refuses through.
    return value.lower() if isinstance(value, str) and value.isascii() else value


# Lower-cased before the pattern applies, so "Alice" registers as "alice" and a second
# "ALICE" collides with it.
Username = Annotated[
    str,
    BeforeValidator(_ascii_lower),
    StringConstraints(pattern=USERNAME_PATTERN),
    WithJsonSchema({"type": "string", "pattern": USERNAME_INPUT_PATTERN}),
]

INVALID_EMAIL_MESSAGE = "Not a valid email address."


def _valid_email(value: str) -> str:
    """The address as email-validator normalises it (domain lower-cased), and the local
    part lower-cased too: addresses that differ only in its case are the same mailbox in
    practice, so they are one account. email-validator's own messages quote characters of
    the address; a refusal here says only that it is not one."""
    try:
        _, address = validate_email(value)
    except PydanticCustomError:
        raise ValueError(INVALID_EMAIL_MESSAGE) from None
    return address.lower()


Email = Annotated[
    str,
    AfterValidator(_valid_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 254}),
]
# Length is checked by the password policy (after NFKC); this only stops absurd bodies.
PasswordField = Annotated[str, Field(min_length=1, max_length=1024)]
# A password being set: the policy's bounds, stated in the document (the policy counts
# characters after NFKC normalisation, and refuses common passwords and ones holding the
# username or email, which no schema can say).
NewPasswordField = Annotated[
    str, Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)
]


class RegisterRequest(StrictModel):
    username: Username
    email: Email
    password: NewPasswordField
    age: int = Field(ge=13, le=130, strict=True)


class PasswordChangeRequest(StrictModel):
    current_password: PasswordField
    new_password: NewPasswordField


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
