"""Request and response bodies of /admin: one class per direction, nothing secret out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from bastion.audit.service import AuditEventFields
from bastion.identity.schemas import UserPublic
from bastion.schemas import StrictModel
from bastion.security.permissions import ROLE_PERMISSIONS

MAX_ROLES = 16  # far more than there are roles; only stops absurd bodies


def _known_role(role: str) -> str:
    if role not in ROLE_PERMISSIONS:
        known = ", ".join(sorted(ROLE_PERMISSIONS))
        raise ValueError(f"Unknown role; the roles are: {known}.")
    return role


def _canonical_roles(roles: list[str]) -> list[str]:
    """De-duplicated and sorted, so equal sets of roles are stored, audited and compared
    the same way."""
    return sorted(set(roles))


RoleName = Annotated[str, Field(max_length=32), AfterValidator(_known_role)]
Roles = Annotated[
    list[RoleName], Field(max_length=MAX_ROLES), AfterValidator(_canonical_roles)
]


class AdminUser(UserPublic):
    """A user as an operator sees it: the public fields and the account's state, never the
    password hash or token bookkeeping."""

    disabled: bool
    locked_until: datetime | None


class UserUpdate(StrictModel):
    """``PATCH /admin/users/{id}``: only these two fields; anything else is a 422.

    An absent field is left as it is. ``null`` is refused rather than read as "absent",
    and an empty body is refused: a request that asks for nothing is probably a mistake.
    """

    roles: Roles | None = None
    disabled: bool | None = Field(default=None, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in ("roles", "disabled"):
                if name in data and data[name] is None:
                    raise ValueError(f"{name} must not be null; leave it out to keep it.")
        return data

    @model_validator(mode="after")
    def _not_empty(self) -> UserUpdate:
        if not self.model_fields_set:
            raise ValueError("Give roles, disabled, or both.")
        return self


class AuditEventOut(AuditEventFields):
    """A stored audit event without its chain hashes (those are for `bastion audit verify`)."""
