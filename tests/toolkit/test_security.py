"""``BastionSecurity`` guarding an app of the user's own: no ``create_app``, no database, no
hidden wiring. Each test is one thing a new user tried (issue 14) that used to be a 500 or a
silent gap: every route answered 500 without ``app.state.rate_limiter``, a 403 needed
bastion's audit table, the permission names were bastion's, the realm and token URL were
hard-coded, a traceback printed locals.

Tokens are real: signed by a key ring of bastion's own key type and verified by the same
``KeyRing`` code the service uses, wrapped in the one-method authenticator a user may write.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from bastion.route_inventory import UnguardedRoutes
from bastion.security.principal import Principal
from bastion.security.tokens import KeyRing, access_token_claims, generate_signing_key
from bastion.toolkit import (
    BastionSecurity,
    RateLimit,
    SecurityMisconfigured,
    StrictModel,
    UnknownPermissions,
    authenticated,
    public,
    require,
)

ISSUER, AUDIENCE = "https://auth.example.com", "reports-api"
USER_ID, SESSION_ID = str(uuid.uuid4()), str(uuid.uuid4())


class RingAuthenticator:
    """The smallest authenticator a user writes: verify with a key ring."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    async def authenticate(self, token: str) -> Principal:
        return Principal.from_claims(self.ring.verify(token, issuer=ISSUER, audience=AUDIENCE))


class Report(StrictModel):
    title: str


class SyncSink:
    def record(self, event: object) -> None: ...


class SyncAuthenticator:
    def authenticate(self, token: str) -> None: ...


RING = KeyRing([generate_signing_key("EdDSA", now=datetime.now(UTC))])


def token(*scopes: str, methods: tuple[str, ...] = ("pwd",)) -> str:
    claims = access_token_claims(
        issuer=ISSUER, audience=AUDIENCE, subject=USER_ID, session_id=SESSION_ID,
        scopes=frozenset(scopes), lifetime=300, now=int(datetime.now(UTC).timestamp()),
        methods=methods,
    )
    return RING.sign(claims)


def security(**overrides: Any) -> BastionSecurity:
    options: dict[str, Any] = {
        "authenticator": RingAuthenticator(RING),
        "permissions": {"reports:read", "reports:write"},
    }
    return BastionSecurity(**{**options, **overrides})


def reports_app(guard: BastionSecurity) -> FastAPI:
    app = FastAPI(lifespan=guard.lifespan)

    @app.get("/reports", dependencies=[require("reports:read")])
    async def reports() -> list[str]:
        return ["q3"]

    @app.post("/reports", dependencies=[require("reports:write")])
    async def write_report() -> dict[str, str]:
        return {"written": "yes"}

    @app.get("/me")
    async def me(principal: Annotated[Principal, authenticated()]) -> dict[str, str]:
        return {"user": principal.user_id}

    @app.get("/status", dependencies=[public()])
    async def status() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async for served in serving(reports_app(security())):
        yield served


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def test_the_contracts_example_guards_an_app_with_nothing_else_configured(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/status")).json() == {"status": "ok"}
    missing = await client.get("/reports")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"] == 'Bearer realm="bastion"'
    forged = await client.get("/reports", headers=bearer(token("reports:read") + "x"))
    assert forged.status_code == 401
    assert 'error="invalid_token"' in forged.headers["www-authenticate"]
    allowed = await client.get("/reports", headers=bearer(token("reports:read")))
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["x-content-type-options"] == "nosniff"
    assert allowed.headers["x-request-id"]
    assert allowed.headers["ratelimit-policy"] == '"default";q=600;w=60'
    assert (await client.get("/me", headers=bearer(token()))).json() == {"user": USER_ID}


async def test_a_refusal_is_a_403_problem_recorded_without_any_database(
    client: httpx.AsyncClient,
) -> None:
    with capture_logs() as logs:
        refused = await client.post("/reports", headers=bearer(token("reports:read")))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    [event] = [line for line in logs if line["event"] == "security_event"]
    assert event["type"] == "access_denied"
    assert event["details"]["missing"] == "reports:write"
    assert event["actor_id"] == USER_ID


async def test_a_quota_is_counted_without_redis_and_answers_429() -> None:
    async for client in serving(reports_app(security(rate_limit="2/minute"))):
        answers = [(await client.get("/status")).status_code for _ in range(3)]
        assert answers == [200, 200, 429]
        limited = await client.get("/status")
        assert limited.headers["retry-after"].isdigit()
    unlimited = reports_app(security(rate_limit=None))

    @unlimited.get("/export", dependencies=[public(rate_limit=RateLimit("export", "1/minute"))])
    async def export() -> dict[str, str]:
        return {"export": "ok"}

    async for client in serving(unlimited):
        assert {(await client.get("/status")).status_code for _ in range(5)} == {200}
        assert "ratelimit-policy" not in (await client.get("/status")).headers
        # A route's own quota still counts without a default one.
        assert [(await client.get("/export")).status_code for _ in range(2)] == [200, 429]


async def test_the_realm_and_the_token_url_are_the_apps_own() -> None:
    guard = security(realm="reports", token_url="/login")
    app = reports_app(guard)
    async for client in serving(app):
        challenge = (await client.get("/reports")).headers["www-authenticate"]
        assert challenge == 'Bearer realm="reports"'
        document = (await client.get("/openapi.json")).json()
    scheme = document["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["flows"]["password"]["tokenUrl"] == "/login"
    assert set(scheme["flows"]["password"]["scopes"]) == {"reports:read", "reports:write"}
    answers = document["paths"]["/reports"]["get"]["responses"]
    assert {"401", "403", "429"} <= set(answers)
    # Without a token URL (a resource server): a plain bearer scheme.
    plain = reports_app(security())
    async for client in serving(plain):
        document = (await client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["OAuth2PasswordBearer"]["type"] == "http"


async def test_install_on_an_existing_app_does_the_same() -> None:
    app = FastAPI()

    @app.get("/reports", dependencies=[require("reports:read")])
    async def reports() -> list[str]:
        return ["q3"]

    security().install(app)
    async for client in serving(app):
        assert (await client.get("/reports")).status_code == 401
        allowed = await client.get("/reports", headers=bearer(token("reports:read")))
        assert allowed.status_code == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"permissions": set()}, "at least one permission"),
        ({"permissions": "reports:read"}, "not one string"),
        ({"permissions": {"Reports Read"}}, "resource:action"),
        ({"rate_limit": "lots"}, "rate_limit"),
        ({"authenticator": object()}, "authenticate"),
        ({"realm": 'x"y'}, "realm"),
        ({"token_url": "login"}, "token_url"),
        ({"audit": object()}, "record"),
        ({"audit": SyncSink()}, "async record"),
        ({"authenticator": SyncAuthenticator()}, "async authenticate"),
        ({"second_factor_for": "reports:write"}, "not one string"),
        ({"second_factor_for": {"users:write"}}, "not in permissions"),
    ],
)
def test_a_misconfiguration_fails_at_construction(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SecurityMisconfigured, match=message):
        security(**overrides)


async def test_a_route_without_a_policy_or_with_a_foreign_permission_stops_the_start() -> None:
    unguarded = reports_app(security())

    @unguarded.get("/open")
    async def open_route() -> None: ...

    with pytest.raises(UnguardedRoutes, match="/open"):
        async for _ in serving(unguarded):
            pass

    foreign = reports_app(security())

    @foreign.get("/payroll", dependencies=[require("payroll:read")])
    async def payroll() -> None: ...

    with pytest.raises(UnknownPermissions, match="payroll:read"):
        async for _ in serving(foreign):
            pass


def test_one_security_layer_per_app() -> None:
    app = FastAPI()
    security().install(app)
    with pytest.raises(SecurityMisconfigured, match="already"):
        security().install(app)


_CRASHING_APP = textwrap.dedent(
    """
    import asyncio, httpx
    from fastapi import FastAPI
    from tests.toolkit.test_security import reports_app, security, token, bearer

    app = reports_app(security())

    @app.get("/boom", dependencies=[__import__("bastion.toolkit").toolkit.require("reports:read")])
    async def boom() -> None:
        secret_token = "Bearer " + TOKEN
        raise RuntimeError("failed")

    TOKEN = token("reports:read")

    async def main() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                answer = await client.get("/boom", headers=bearer(TOKEN))
                print("STATUS", answer.status_code, answer.headers["content-type"])
                print("TOKEN", TOKEN)

    asyncio.run(main())
    """
)


def test_a_crash_logs_no_locals_and_no_token_when_the_app_configured_no_logging() -> None:
    """A fresh process, as a user's app starts: structlog unconfigured."""
    ran = subprocess.run(
        [sys.executable, "-c", _CRASHING_APP], capture_output=True, text=True, timeout=60,
        check=False,
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output
    lines = output.splitlines()
    sent = next(line for line in lines if line.startswith("TOKEN ")).removeprefix("TOKEN ")
    logged = "\n".join(line for line in lines if not line.startswith("TOKEN "))
    assert "STATUS 500 application/problem+json" in logged
    assert "unhandled_exception" in logged
    assert sent not in logged and sent[:20] not in logged
    assert "secret_token" not in logged  # no local variables
    assert len(logged.splitlines()) < 20, logged


_RICH_LOGGING_APP = _CRASHING_APP.replace(
    "import asyncio, httpx\n",
    "import asyncio, httpx, structlog\n"
    "structlog.configure(processors=[structlog.dev.ConsoleRenderer(colors=False)])\n",
)


def test_a_crash_logs_no_token_when_the_app_configured_a_renderer_that_prints_locals() -> None:
    """The host app's own structlog set-up (its console renderer shows each frame's locals
    for an exception): bastion hands it a redacted text, not the exception."""
    ran = subprocess.run(
        [sys.executable, "-c", _RICH_LOGGING_APP], capture_output=True, text=True, timeout=60,
        check=False,
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output
    lines = output.splitlines()
    sent = next(line for line in lines if line.startswith("TOKEN ")).removeprefix("TOKEN ")
    logged = "\n".join(line for line in lines if not line.startswith("TOKEN "))
    assert "unhandled_exception" in logged
    assert sent not in logged and sent[:20] not in logged
    assert "secret_token" not in logged


async def test_routes_declared_before_the_lifespan_check_identity_before_the_body() -> None:
    """The contract's form declares the routes before the layer is installed: they are
    served as PolicyRoutes too, so a malformed body without a token is a 401, not a 400,
    and a body of the wrong media type a 401 before any 415."""
    guard = security()
    app = FastAPI(lifespan=guard.lifespan)

    @app.post("/reports", dependencies=[require("reports:write")], status_code=201)
    async def write_report(report: Report) -> dict[str, str]:
        return {"title": report.title}

    async for client in serving(app):
        headers = {"Content-Type": "application/json"}
        anonymous = await client.post("/reports", content=b"{not json", headers=headers)
        assert anonymous.status_code == 401, anonymous.text
        wrong = await client.post("/reports", content=b"x", headers={"Content-Type": "text/plain"})
        assert wrong.status_code == 401
        allowed = {**headers, **bearer(token("reports:write"))}
        malformed = await client.post("/reports", content=b"{not json", headers=allowed)
        assert malformed.status_code == 400
        text = {"Content-Type": "text/plain", **bearer(token("reports:write"))}
        assert (await client.post("/reports", content=b"x", headers=text)).status_code == 415
        created = await client.post("/reports", json={"title": "q3"}, headers=allowed)
        assert created.status_code == 201, created.text


async def test_fastapis_default_docs_are_served_from_the_package_under_their_csp(
    client: httpx.AsyncClient,
) -> None:
    """FastAPI's stock page loads Swagger UI from a CDN, which the docs' CSP refuses (a
    blank page): the layer serves bastion's self-hosted one at the same path."""
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/docs/swagger-init.js", "/docs/static/swagger-ui-bundle.js"):
        assert (await client.get(asset)).status_code == 200, asset
    assert (await client.get("/openapi.json")).status_code == 200


async def test_a_permission_can_require_a_sign_in_with_a_second_factor() -> None:
    """RFC 9470 step-up: ``second_factor_for`` routes need a token whose ``amr`` holds a
    second factor; the other routes, and a token without the permission, are as before."""
    guarded = reports_app(security(second_factor_for={"reports:write"}))
    async for client in serving(guarded):
        with capture_logs() as logs:
            password_only = await client.post(
                "/reports", headers=bearer(token("reports:write"))
            )
        assert password_only.status_code == 403
        assert password_only.headers["content-type"] == "application/problem+json"
        challenge = password_only.headers["www-authenticate"]
        assert 'error="insufficient_user_authentication"' in challenge
        [event] = [line for line in logs if line["event"] == "security_event"]
        assert event["details"]["reason"] == "second_factor_required"
        # No amr at all (a token of another issuer) proves no second factor either.
        no_amr = await client.post("/reports", headers=bearer(token("reports:write", methods=())))
        assert no_amr.status_code == 403
        for methods in (("otp", "pwd"), ("mfa", "pwd")):
            stepped_up = await client.post(
                "/reports", headers=bearer(token("reports:write", methods=methods))
            )
            assert stepped_up.status_code == 200, (methods, stepped_up.text)
        # Missing the permission is still insufficient_scope, whatever the factors.
        scope = await client.post(
            "/reports", headers=bearer(token("reports:read", methods=("otp", "pwd")))
        )
        assert 'error="insufficient_scope"' in scope.headers["www-authenticate"]
        read = await client.get("/reports", headers=bearer(token("reports:read")))
        assert read.status_code == 200
