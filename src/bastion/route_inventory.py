"""The route inventory: which policy each route declares, read from the routes themselves.

Deny by default rests on it: ``assert_routes_guarded`` stops an app whose route declares no
policy, ``bastion check`` reports the same list (``route_findings``), and the rate limiter
resolves every quota a policy names at start (``declared_rate_limits``). Nothing here runs per
request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from bastion.config import Finding
from bastion.dependencies import BearerToken, PublicPolicy
from bastion.security.ratelimits import RateLimit


def _policy_dependants(route: Any) -> Iterator[tuple[Dependant, PublicPolicy | BearerToken]]:
    """The policy dependencies of a route (``APIRoute`` or an included route's context,
    whose dependant carries the router's dependencies too), however deeply nested."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if isinstance(dependant.call, PublicPolicy | BearerToken):
            yield dependant, dependant.call
        pending.extend(dependant.dependencies)


def route_policy(route: Any) -> str | None:
    """What a FastAPI route declares (``public``, ``authenticated``, ``require: a b``), or
    None."""
    policies: list[str] = []
    for dependant, policy in _policy_dependants(route):
        if isinstance(policy, PublicPolicy):
            policies.append("public")
        else:
            scopes = sorted(dependant.own_oauth_scopes or [])
            policies.append(f"require: {' '.join(scopes)}" if scopes else "authenticated")
    if not policies:
        return None
    # The strictest declaration wins when several are present.
    return max(policies, key=lambda policy: (policy.startswith("require"), policy != "public"))


def route_rate_limits(route: Any) -> set[RateLimit]:
    """The ``RateLimit`` every policy of the route names (empty: not limited)."""
    return {
        policy.rate_limit
        for _, policy in _policy_dependants(route)
        if policy.rate_limit is not None
    }


def declared_rate_limits(app: FastAPI) -> set[RateLimit]:
    """Every ``RateLimit`` a route's policy names, to resolve them all at start: a name with
    no configured quota then stops the start instead of failing requests."""
    found: set[RateLimit] = set()
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            found |= route_rate_limits(context)
    return found


def route_policies(app: FastAPI) -> list[tuple[str, str, str | None]]:
    """(methods, path, policy) of every route; policy None means none declared.

    Routes that are not FastAPI endpoints (mounts, plain Starlette routes) have no policy
    unless their path is in ``app.state.public_paths``: deny by default.
    """
    allowed: set[str] = set(getattr(app.state, "public_paths", ()))
    found: list[tuple[str, str, str | None]] = []
    for context in iter_route_contexts(app.routes):
        path = str(context.path)
        if isinstance(context.original_route, APIRoute):
            methods = ",".join(sorted(context.methods or []))
            found.append((methods, path, route_policy(context)))
        else:
            kind = type(context.original_route).__name__
            found.append((kind, path, "public" if path in allowed else None))
    return found


def unguarded_routes(app: FastAPI) -> list[str]:
    """``METHOD path`` of every route that declares no policy."""
    return [f"{methods} {path}" for methods, path, policy in route_policies(app) if not policy]


def route_findings(app: FastAPI) -> list[Finding]:
    """``bastion check``'s view of ``unguarded_routes``: one finding per route, in every
    environment (such a route stops the application from starting anywhere)."""
    return [
        Finding("route", f"{route} declares no policy", production_only=False)
        for route in unguarded_routes(app)
    ]


class UnguardedRoutes(RuntimeError):
    def __init__(self, offenders: list[str]) -> None:
        super().__init__(
            "refusing to start: these routes declare no policy (public(), authenticated() "
            "or require(...)):\n" + "\n".join(f"  - {offender}" for offender in offenders)
        )
        self.offenders = offenders


def assert_routes_guarded(app: FastAPI) -> None:
    """Raises ``UnguardedRoutes`` naming every route without a policy."""
    offenders = unguarded_routes(app)
    if offenders:
        raise UnguardedRoutes(offenders)
