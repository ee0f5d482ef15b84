"""Request bodies of the mailed-link flows: email verification and password reset.

Each is a ``StrictModel``: a field the schema does not name is a 422, never dropped.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from bastion.identity.schemas import Email, NewPasswordField
from bastion.schemas import StrictModel

# What a mailed link carries. Only bounded here, not patterned: whatever was pasted, a token
# that is not one of ours is the same 400 as a used or expired one ("bad link"), never a
# 422 that would describe what a valid token looks like.
MailedToken = Annotated[str, Field(min_length=1, max_length=256)]


class VerifyEmailRequest(StrictModel):
    """The token of a verification link (``/app/#/verify-email?token=…``)."""

    token: MailedToken


class ForgotPasswordRequest(StrictModel):
    """The address to send a reset link to, if it is an account's."""

    email: Email


class ResetPasswordRequest(StrictModel):
    """The token of a reset link (``/app/#/reset-password?token=…``) and the new password,
    held to the registration's policy."""

    token: MailedToken
    new_password: NewPasswordField
