"""Permissions are ``resource:action`` strings; roles map to permission sets.

Kept in one place so a new role or permission is one line. A token's ``scope`` is the
intersection of what the client asked for and what the user's roles grant.
"""

from __future__ import annotations

from collections.abc import Iterable

# Changing another user's roles or state: with BASTION_ADMIN_MFA=required it also needs a
# sign-in with a second factor.
USERS_WRITE = "users:write"
ALL_PERMISSIONS: frozenset[str] = frozenset(
    {
        "notes:read",
        "notes:write",
        "notes:read_all",
        "users:read",
        USERS_WRITE,
        "audit:read",
    }
)

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "user": frozenset({"notes:read", "notes:write"}),
    "auditor": frozenset({"audit:read"}),
    "admin": ALL_PERMISSIONS,
}
DEFAULT_ROLES: tuple[str, ...] = ("user",)


class UnknownScope(ValueError):
    """The client asked for a permission that does not exist."""


def granted_permissions(roles: Iterable[str]) -> frozenset[str]:
    granted: set[str] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS.get(role, frozenset())
    return frozenset(granted)


def parse_scope(scope: str | None) -> frozenset[str] | None:
    """The space-separated scope of a request; None when the client asked for nothing."""
    if scope is None or not scope.strip():
        return None
    return frozenset(scope.split())


def resolve_scope(requested: frozenset[str] | None, granted: frozenset[str]) -> frozenset[str]:
    """requested ∩ granted; everything granted when nothing was asked for."""
    if requested is None:
        return granted
    unknown = requested - ALL_PERMISSIONS
    if unknown:
        raise UnknownScope
    return requested & granted
