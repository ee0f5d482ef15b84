"""Request and response bodies of /auth, one class per direction (no mass assignment)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

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
# What an account's address may be, whole: a dot-atom local part of ASCII (RFC 5322 atext)
# and a domain name of dotted labels with an alphabetic top-level label. Narrower than RFC
# 5322 on purpose (no quoted local parts, IP literals or non-ASCII, which only serve to
# disguise an address), and exactly what is checked: the document states this pattern, so
# a client knows every address the server takes. Special-use names (.test, .local) pass:
# a verification mail to them fails to arrive, which is the real check.
_ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^{_ATEXT}+(?:\.{_ATEXT}+)*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}$"
EMAIL_MAX_LENGTH = 254  # RFC 5321's path limit, less the angle brackets
EMAIL_LOCAL_MAX_LENGTH = 64  # RFC 5321 §4.5.3.1.1; the "email" format holds to it too
_EMAIL = re.compile(EMAIL_PATTERN)


def _valid_email(value: str) -> str:
    """The address lower-cased: addresses that differ only in case are the same mailbox in
    practice, so they are one account. A refusal says only that it is not an address,
    never which character was wrong."""
    if (
        len(value) > EMAIL_MAX_LENGTH
        or not _EMAIL.fullmatch(value)
        or len(value.rpartition("@")[0]) > EMAIL_LOCAL_MAX_LENGTH
    ):
        raise ValueError(INVALID_EMAIL_MESSAGE)
    return value.lower()


Email = Annotated[
    str,
    AfterValidator(_valid_email),
    WithJsonSchema(
        {
            "type": "string",
            "format": "email",
            "pattern": EMAIL_PATTERN,
            "maxLength": EMAIL_MAX_LENGTH,
        }
    ),
]
# Length is checked by the password policy (after NFKC); this only stops absurd bodies.
PasswordField = Annotated[str, Field(min_length=1, max_length=1024)]
# A password being set: the policy's bounds, stated in the document (the policy counts
# characters after NFKC normalisation, and refuses common passwords and ones holding the
# username or email, which no schema can say).
NewPasswordField = Annotated[
    str, Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)
]


def _integral(value: object) -> object:
    # JSON Schema's "integer" is any number with no fractional part: 40.0 is 40. Strict
    # otherwise: true and "30" are not ages.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class RegisterRequest(StrictModel):
    username: Username
    email: Email
    password: NewPasswordField
    age: Annotated[int, Field(ge=13, le=130, strict=True), BeforeValidator(_integral)]


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
    email_verified: bool
    mfa_enabled: bool


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


class SessionOut(BaseModel):
    """One live session of the caller, as ``GET /auth/sessions`` shows it: enough to
    recognise it, nothing that would let anyone use it."""

    id: uuid.UUID
    # How it is carried: refresh and access tokens, or a browser's session cookie.
    kind: Literal["bearer", "cookie"]
    created_at: datetime
    last_used_at: datetime | None
    client_ip: str | None
    user_agent: str | None
    current: bool


# A TOTP code as typed: six digits, spaces allowed between them ("123 456").
OtpField = Annotated[str, Field(min_length=6, max_length=16, pattern=r"^[0-9 ]+$")]


class TotpSetupRequest(StrictModel):
    password: PasswordField


class TotpSetup(BaseModel):
    """A pending TOTP set-up: enter the secret (or scan the QR code) in an authenticator
    app, then confirm with a code."""

    secret: str
    otpauth_uri: str
    qr_code: str = Field(description="A `data:image/svg+xml` URI of the `otpauth_uri` QR code.")


class TotpConfirmRequest(StrictModel):
    otp: OtpField


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(
        description="Single-use codes, shown only now: each signs in once in place of a "
        "TOTP code."
    )


class ReauthenticatedRequest(StrictModel):
    """The password and a current TOTP code: turning MFA off or renewing recovery codes."""

    password: PasswordField
    otp: OtpField
