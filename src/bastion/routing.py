"""Route policies checked before FastAPI solves a route's dependencies.

A policy (``public()``, ``authenticated()``, ``require(...)``) is declared as a FastAPI
dependency, so the OpenAPI document shows its security scheme and scopes, the unguarded-route
check finds it, and it works in any FastAPI app. Resolved per request by FastAPI, though, each
policy costs a dependency solve (10 to 15 us) on top of its own work. ``PolicyRoute`` keeps
the declaration and skips the resolution: its handler runs the route's policies itself
(``dependencies.enforce``, in FastAPI's order, with the same rate-limit counting, 401 before
403 and audited denials) and hands FastAPI a copy of the route's dependant without them. A
parameter that asked for the principal gets the one the policy verified, from the scope.

The route's own ``dependant`` is never changed, so OpenAPI and ``route_policy`` read the
declarations as before. A route reached through an included router's context, or whose
policy is overridden in ``app.dependency_overrides``, is served the ordinary way.

Every request a ``PolicyRoute`` serves, policies and endpoint alike, has one storage deadline
(``bastion.storage.deadlines``): its answer comes within ``BASTION_DATABASE_TIMEOUT`` of its
first unit of work, however many it takes.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi import routing as fastapi_routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, request_response

from bastion.dependencies import (
    PRINCIPAL_SCOPE_KEY,
    BearerToken,
    PolicyCheck,
    PublicPolicy,
    enforce,
    policy_checks,
)
from bastion.errors import UnsupportedMediaType
from bastion.middleware.body_limit import BodyLimitMiddleware
from bastion.ratelimiting import RATE_LIMITED_RESPONSES
from bastion.security.principal import Principal
from bastion.storage.deadlines import one_deadline

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
# The request, for an endpoint wrapper that needs it when the endpoint does not ask for it.
_REQUEST_PARAM = "_bastion_request"


async def _verified_principal(request: Request) -> Principal:
    principal: Principal = request.scope[PRINCIPAL_SCOPE_KEY]
    return principal


async def _no_value() -> None:
    return None


def without_policies(dependant: Dependant) -> Dependant:
    """A copy of ``dependant`` whose policy dependencies are gone; one that fed a parameter
    is replaced by a read of the verified principal. Unchanged parts are shared."""
    dependencies: list[Dependant] = []
    changed = False
    for sub in dependant.dependencies:
        if isinstance(sub.call, PublicPolicy | BearerToken):
            changed = True
            if sub.name is not None:
                bearer = isinstance(sub.call, BearerToken)
                dependencies.append(
                    Dependant(
                        call=_verified_principal if bearer else _no_value,
                        name=sub.name,
                        request_param_name="request" if bearer else None,
                        path=sub.path,
                    )
                )
            continue
        stripped = without_policies(sub)
        changed = changed or stripped is not sub
        dependencies.append(stripped)
    return dataclasses.replace(dependant, dependencies=dependencies) if changed else dependant


def _endpoint_given_principal(dependant: Dependant) -> Dependant:
    """The endpoint's own principal parameters filled by a wrapper instead of a dependency
    solve each. Only for ``async def`` endpoints: a sync one runs in a thread."""
    names = [
        sub.name
        for sub in dependant.dependencies
        if sub.call is _verified_principal and sub.name is not None
    ]
    endpoint = dependant.call
    if not names or not inspect.iscoroutinefunction(endpoint):
        return dependant
    request_name = dependant.request_param_name or _REQUEST_PARAM
    passes_request = dependant.request_param_name is not None

    @functools.wraps(endpoint)
    async def given_principal(**values: Any) -> Any:
        request = values[request_name] if passes_request else values.pop(request_name)
        principal = request.scope[PRINCIPAL_SCOPE_KEY]
        for name in names:
            values[name] = principal
        return await endpoint(**values)

    return dataclasses.replace(
        dependant,
        call=given_principal,
        request_param_name=request_name,
        dependencies=[sub for sub in dependant.dependencies if sub.call is not _verified_principal],
    )


def _guarded_handler(route: APIRoute, build: Callable[[], Handler]) -> Handler:
    """``build`` makes FastAPI's handler from ``route.dependant``; it is called once with the
    declared dependant (the fallback) and once with the policies taken out."""
    declared = route.dependant
    checks = policy_checks(declared)
    plain = build()
    if not checks:
        return _media_type_checked(route, plain)
    route.dependant = _endpoint_given_principal(without_policies(declared))
    try:
        # Who is asking, and whether they may, before anything about the body: the
        # policies run first (``_policy_handler``), then the media type, then the route.
        fast = _media_type_checked(route, build())
    finally:
        route.dependant = declared
    return _policy_handler(route, tuple(checks), plain, fast)


JSON_MEDIA_TYPE = "application/json"


def accepted_media_types(route: APIRoute) -> tuple[str, ...]:
    """The media types of the route's request body, as its OpenAPI operation states them
    (a body the route reads itself declares its own, as the token endpoint's form does);
    none when it takes no body."""
    extra = (route.openapi_extra or {}).get("requestBody", {}).get("content")
    if extra:
        return tuple(extra)
    if route.body_field is not None:
        return (getattr(route.body_field.field_info, "media_type", JSON_MEDIA_TYPE),)
    return ()


def _check_media_type(request: Request, accepted: tuple[str, ...]) -> None:
    """415 for a body sent as something the route does not read. A request without
    ``Content-Type`` goes on: FastAPI reads it as JSON, and a form route finds no form."""
    header = request.headers.get("content-type")
    if header is None:
        return
    media_type = header.partition(";")[0].strip().lower()
    if media_type in accepted:
        return
    if JSON_MEDIA_TYPE in accepted and media_type.startswith("application/") and (
        media_type.endswith("+json")
    ):
        return  # a structured-syntax suffix (RFC 6839): FastAPI reads it as JSON
    raise UnsupportedMediaType(list(accepted))


def _media_type_checked(route: APIRoute, handler: Handler) -> Handler:
    accepted = accepted_media_types(route)
    if not accepted:
        return handler

    async def handler_of_its_media_types(request: Request) -> Response:
        _check_media_type(request, accepted)
        return await handler(request)

    return handler_of_its_media_types


def _policy_handler(
    route: APIRoute, checks: tuple[PolicyCheck, ...], plain: Handler, fast: Handler
) -> Handler:
    policies = frozenset(check.policy for check in checks)
    provider = route.dependency_overrides_provider

    async def handler(request: Request) -> Response:
        overrides = getattr(provider, "dependency_overrides", None)
        if overrides and not policies.isdisjoint(overrides):
            return await plain(request)
        await enforce(request, checks)
        return await fast(request)

    return handler


def _with_one_deadline(handler: Handler) -> Handler:
    async def handler_with_one_deadline(request: Request) -> Response:
        with one_deadline():
            return await handler(request)

    return handler_with_one_deadline


def _serves_included_context(route: APIRoute) -> bool:
    """FastAPI (0.165) builds an included router's per-include handler through the route's
    ``get_route_handler`` with this context variable set; its dependant carries the
    router's dependencies too, so that handler stays FastAPI's. Read defensively, as the
    name is FastAPI's internals."""
    context_var = getattr(fastapi_routing, "_effective_route_context_var", None)
    context = context_var.get() if context_var is not None else None
    return context is not None and getattr(context, "original_route", None) is route


class PolicyRoute(APIRoute):
    """An ``APIRoute`` whose policies are checked before FastAPI solves its dependencies.

    ``create_app`` makes it the app's ``route_class``; another app opts in with
    ``app.router.route_class = PolicyRoute`` or ``APIRouter(route_class=PolicyRoute)``.

    A route's ``max_body_size`` (FastAPI's parameter) is enforced by bastion's
    ``BodyLimitMiddleware`` around the route instead of Starlette's, so that its 413 is the
    same problem document as the global limit's (Starlette answers in plain text).
    """

    def __init__(
        self, path: str, endpoint: Callable[..., Any], *, max_body_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.max_body_size = max_body_size
        if max_body_size is not None:
            self.app = BodyLimitMiddleware(self.app, max_body_bytes=max_body_size)

    def get_route_handler(self) -> Handler:
        if _serves_included_context(self):
            return _with_one_deadline(super().get_route_handler())
        return _with_one_deadline(_guarded_handler(self, super().get_route_handler))


def upgrade_to_policy_route(route: APIRoute) -> None:
    """A plain ``APIRoute`` declared before the app's security layer was installed (the
    routes of ``FastAPI(lifespan=security.lifespan)``): from now on served as a
    ``PolicyRoute``, its policies checked before its body is read, like every later one."""
    if type(route) is not APIRoute:
        return  # already a PolicyRoute, or a route class of the app's own
    limit = route.max_body_size
    route.__class__ = PolicyRoute
    route.max_body_size = limit
    handler = request_response(route.get_route_handler())
    route.app = handler if limit is None else BodyLimitMiddleware(handler, max_body_bytes=limit)


def service_router(tag: str) -> APIRouter:
    """A router of the service's own routes: ``PolicyRoute`` (policies run before the body
    is read; a route that takes a body declares its ``max_body_size`` under the global
    ``BASTION_MAX_BODY_BYTES``), and every operation documents its 429."""
    return APIRouter(tags=[tag], responses=RATE_LIMITED_RESPONSES, route_class=PolicyRoute)
