"""Request and response bodies of /admin: one class per direction, nothing secret out."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, ClassVar

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

from bastion.audit.service import AuditEventFields
from bastion.identity.schemas import UserPublic
from bastion.schemas import PatchModel
from bastion.security.permissions import ROLE_PERMISSIONS

# RFC 3339's date-time, which JSON Schema's "date-time" format means: a full date, "T", a
# time and a zone. Pydantic alone also reads a number as a Unix time and takes a bare date.
RFC_3339_DATE_TIME = (
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$"
)


def _rfc_3339_text(value: object) -> object:
    if isinstance(value, str) and not re.fullmatch(RFC_3339_DATE_TIME, value):
        raise ValueError("Give a date and time with a time zone (RFC 3339).")
    return value


DateTimeText = Annotated[AwareDatetime, BeforeValidator(_rfc_3339_text)]

# RFC 9562's hyphenated form, which JSON Schema's "uuid" format means. Pydantic alone also
# takes 32 bare hex digits, braces and a "urn:uuid:" prefix.
UUID_TEXT = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"


def _uuid_text(value: object) -> object:
    if isinstance(value, str) and not re.fullmatch(UUID_TEXT, value):
        raise ValueError("Give a UUID in its hyphenated form.")
    return value


UuidText = Annotated[uuid.UUID, BeforeValidator(_uuid_text)]
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


# The document lists the roles, so a client knows them without reading the error.
RoleName = Annotated[
    str,
    Field(max_length=32, json_schema_extra={"enum": sorted(ROLE_PERMISSIONS)}),
    AfterValidator(_known_role),
]
Roles = Annotated[
    list[RoleName], Field(max_length=MAX_ROLES), AfterValidator(_canonical_roles)
]


class AdminUser(UserPublic):
    """A user as an operator sees it: the public fields and the account's state, never the
    password hash or token bookkeeping."""

    disabled: bool
    locked_until: datetime | None


class UserUpdate(PatchModel):
    """``PATCH /admin/users/{id}``: only these two fields; anything else is a 422.

    An absent field is left as it is, ``null`` is refused, and so is an empty body: a
    request that asks for nothing is probably a mistake.
    """

    _at_least_one_field: ClassVar[bool] = True

    roles: Roles | None = None
    disabled: bool | None = Field(default=None, strict=True)


class AuditEventOut(AuditEventFields):
    """A stored audit event without its chain hashes (those are for `bastion audit verify`)."""
