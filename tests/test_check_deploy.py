"""``bastion check --deploy``: every finding, one line each, non-zero on any; silent and 0 on a
correct production configuration. Unguarded routes are findings too."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import update
from typer.testing import CliRunner

import bastion.app
from bastion.cli import cli
from bastion.config import Finding, Settings, insecure_findings
from bastion.dependencies import public
from bastion.route_inventory import route_findings
from bastion.storage import Database
from bastion.storage.tables import User
from tests.conftest import TEST_ENCRYPTION_KEY, make_settings
from tests.test_cli import run_bastion

DAY = 86_400
# A correct production configuration, as environment variables and as settings.
PRODUCTION_ENV = {
    "BASTION_ENV": "production",
    "BASTION_ISSUER": "https://api.example.com",
    "BASTION_PUBLIC_URL": "https://api.example.com",
    "BASTION_ALLOWED_HOSTS": "api.example.com",
    "BASTION_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
    "BASTION_SMTP_URL": "smtps://mail.example.com",
}
PRODUCTION = {"env": "production", "issuer": "https://api.example.com",
              "public_url": "https://api.example.com", "allowed_hosts": ["api.example.com"],
              "encryption_key": TEST_ENCRYPTION_KEY, "smtp_url": "smtps://mail.example.com"}
# The same, without BASTION_ENV: what a CI job judges with --deploy before a release.
CANDIDATE_ENV = {key: value for key, value in PRODUCTION_ENV.items() if key != "BASTION_ENV"}
CANDIDATE = {key: value for key, value in PRODUCTION.items() if key != "env"}
FINDING_LINE = re.compile(r"(BASTION_[A-Z_]+|route|account|database): \S.*")

# Every finding: the settings that cause it and the variable it names.
INSECURE = [
    pytest.param({"env": "development"}, "BASTION_ENV", id="development-mode"),
    pytest.param({"log_level": "DEBUG"}, "BASTION_LOG_LEVEL", id="debug-logging"),
    pytest.param({"issuer": "http://api.example.com"}, "BASTION_ISSUER", id="http-issuer"),
    pytest.param({"public_url": "http://api.example.com"}, "BASTION_PUBLIC_URL",
                 id="http-public-url"),
    pytest.param({"password_hash_memory_kib": 8192}, "BASTION_PASSWORD_HASH_MEMORY_KIB",
                 id="argon2-memory"),
    pytest.param({"password_hash_time_cost": 1}, "BASTION_PASSWORD_HASH_MEMORY_KIB",
                 id="argon2-time"),
    pytest.param({"access_token_ttl": 3601}, "BASTION_ACCESS_TOKEN_TTL", id="long-access-token"),
    pytest.param({"session_max_age": 91 * DAY}, "BASTION_SESSION_MAX_AGE", id="long-session"),
    pytest.param({"refresh_token_ttl": 180 * DAY, "session_max_age": 180 * DAY},
                 "BASTION_SESSION_MAX_AGE", id="long-refresh-chain"),
    pytest.param({"lockout_threshold": 101}, "BASTION_LOCKOUT_THRESHOLD", id="lax-lockout"),
    pytest.param({"cors_origins": ["*"]}, "BASTION_CORS_ORIGINS", id="cors-wildcard"),
    pytest.param({"cors_origins": ["http://app.example.com"]}, "BASTION_CORS_ORIGINS",
                 id="cors-http"),
    pytest.param({"allowed_hosts": ["*"]}, "BASTION_ALLOWED_HOSTS", id="any-host"),
    pytest.param({"trusted_proxies": ["0.0.0.0/0"]}, "BASTION_TRUSTED_PROXIES",
                 id="trust-everyone"),
    pytest.param({"rate_limits_enabled": False}, "BASTION_RATE_LIMITS_ENABLED",
                 id="no-rate-limits"),
    pytest.param({"encryption_key": None}, "BASTION_ENCRYPTION_KEY", id="no-encryption-key"),
    pytest.param({"smtp_url": None}, "BASTION_SMTP_URL", id="no-smtp"),
]


# --- the command ------------------------------------------------------------------------------


def finding_lines(output: str) -> list[str]:
    lines = output.splitlines()
    assert all(FINDING_LINE.fullmatch(line) for line in lines), output
    return lines


def test_deploy_fails_on_the_development_defaults(tmp_path: Path) -> None:
    result = run_bastion("check", "--deploy", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    lines = finding_lines(result.stdout)
    assert len(lines) >= 2
    named = {line.split(":", 1)[0] for line in lines}
    assert {"BASTION_ENV", "BASTION_ISSUER"} <= named
    assert "no insecure settings" not in result.stdout
    assert not (tmp_path / ".bastion").exists()  # the check stores nothing


def test_a_correct_production_configuration_passes(tmp_path: Path) -> None:
    env = {**PRODUCTION_ENV, "BASTION_DATA_DIR": str(tmp_path / "data")}
    for args in (["check", "--deploy"], ["check"]):
        result = run_bastion(*args, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout == "no insecure settings found\n"
    assert not (tmp_path / "data").exists()


def test_a_candidate_without_production_mode_is_told_to_set_it(tmp_path: Path) -> None:
    result = run_bastion("check", "--deploy", cwd=tmp_path, env=CANDIDATE_ENV)
    assert result.returncode == 1
    (line,) = finding_lines(result.stdout)
    assert line.startswith("BASTION_ENV: development mode")
    # Without --deploy a development-mode candidate is fine: nothing is insecure everywhere.
    assert run_bastion("check", cwd=tmp_path, env=CANDIDATE_ENV).returncode == 0


def test_every_finding_is_named_one_line_each(tmp_path: Path) -> None:
    env = {
        **CANDIDATE_ENV,
        "BASTION_LOG_LEVEL": "DEBUG",
        "BASTION_ISSUER": "http://api.example.com",
        "BASTION_PASSWORD_HASH_MEMORY_KIB": "8192",
        "BASTION_ACCESS_TOKEN_TTL": "7200",
        "BASTION_REFRESH_TOKEN_TTL": str(180 * DAY),
        "BASTION_SESSION_MAX_AGE": str(180 * DAY),
        "BASTION_LOCKOUT_THRESHOLD": "500",
        "BASTION_CORS_ORIGINS": "*,http://app.example.com",
        "BASTION_ALLOWED_HOSTS": "*",
        "BASTION_TRUSTED_PROXIES": "0.0.0.0/0",
        "BASTION_RATE_LIMITS_ENABLED": "false",
    }
    result = run_bastion("check", "--deploy", cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stderr
    named = [line.split(":", 1)[0] for line in finding_lines(result.stdout)]
    assert sorted(named) == sorted(
        [
            "BASTION_ENV",
            "BASTION_LOG_LEVEL",
            "BASTION_ISSUER",
            "BASTION_PASSWORD_HASH_MEMORY_KIB",
            "BASTION_ACCESS_TOKEN_TTL",
            "BASTION_SESSION_MAX_AGE",
            "BASTION_LOCKOUT_THRESHOLD",
            "BASTION_CORS_ORIGINS",
            "BASTION_CORS_ORIGINS",
            "BASTION_ALLOWED_HOSTS",
            "BASTION_TRUSTED_PROXIES",
            "BASTION_RATE_LIMITS_ENABLED",
        ]
    )
    # Without --deploy only what is insecure everywhere is reported.
    everywhere = run_bastion("check", cwd=tmp_path, env=env)
    assert everywhere.returncode == 1
    assert sorted(line.split(":", 1)[0] for line in finding_lines(everywhere.stdout)) == [
        "BASTION_CORS_ORIGINS",
        "BASTION_TRUSTED_PROXIES",
    ]


def test_production_refuses_a_new_finding_before_the_check_runs(tmp_path: Path) -> None:
    env = {**PRODUCTION_ENV, "BASTION_ACCESS_TOKEN_TTL": "7200"}
    result = run_bastion("check", "--deploy", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "refusing to start in production" in result.stderr
    assert "BASTION_ACCESS_TOKEN_TTL" in result.stderr


def test_a_short_hs256_secret_fails_the_check_in_every_environment(tmp_path: Path) -> None:
    env = {"BASTION_JWT_ALGORITHM": "HS256", "BASTION_JWT_SECRET": "tiny-secret"}
    result = run_bastion("check", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "BASTION_JWT_SECRET" in result.stderr
    assert "tiny-secret" not in result.stderr


# --- the findings, one at a time --------------------------------------------------------------


def settings_of(tmp_path: Path, overrides: dict[str, object]) -> Settings:
    return make_settings(tmp_path, **{**CANDIDATE, **overrides})


def test_a_correct_candidate_has_no_finding_but_production_mode(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, {})
    assert [finding.setting for finding in insecure_findings(settings, deploy=True)] == [
        "BASTION_ENV"
    ]
    assert insecure_findings(make_settings(tmp_path, **PRODUCTION), deploy=True) == []


@pytest.mark.parametrize(("overrides", "named"), INSECURE)
def test_each_insecure_setting_is_a_deploy_finding(
    tmp_path: Path, overrides: dict[str, object], named: str
) -> None:
    settings = settings_of(tmp_path, overrides)
    found = {finding.setting for finding in insecure_findings(settings, deploy=True)}
    assert found - {"BASTION_ENV"} == ({named} - {"BASTION_ENV"})
    assert "BASTION_ENV" in found


@pytest.mark.parametrize(
    ("overrides", "named"), [param for param in INSECURE if param.id != "development-mode"]
)
def test_production_refuses_each_insecure_setting(
    tmp_path: Path, overrides: dict[str, object], named: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(tmp_path, **{**PRODUCTION, **overrides})
    assert "refusing to start in production" in str(refused.value)
    assert named in str(refused.value)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"access_token_ttl": 3600}, id="access-token-one-hour"),
        pytest.param({"refresh_token_ttl": 90 * DAY, "session_max_age": 90 * DAY},
                     id="ninety-days"),
        # A refresh token never outlives its session: a long TTL under a short session is
        # bounded by the session, so it is no finding of its own.
        pytest.param({"refresh_token_ttl": 365 * DAY, "session_max_age": 30 * DAY},
                     id="refresh-capped-by-session"),
        pytest.param({"lockout_threshold": 100}, id="lockout-100"),
        pytest.param({"jwt_algorithm": "HS256", "jwt_secret": "s" * 32}, id="hs256-long-secret"),
        pytest.param({"cors_origins": ["https://app.example.com"]}, id="https-origin"),
        pytest.param({"trusted_proxies": ["10.0.0.0/8"]}, id="private-proxy-network"),
        pytest.param({"https_redirect": False}, id="tls-ends-at-a-proxy"),
        pytest.param({"log_level": "WARNING"}, id="quiet-logs"),
    ],
)
def test_limits_are_inclusive_and_sound_settings_pass(
    tmp_path: Path, overrides: dict[str, object]
) -> None:
    settings = make_settings(tmp_path, **{**PRODUCTION, **overrides})
    assert insecure_findings(settings, deploy=True) == []


def test_new_findings_are_production_only(tmp_path: Path) -> None:
    """Development keeps working with long tokens or a lax lockout; --deploy names them."""
    settings = make_settings(
        tmp_path, access_token_ttl=7200, session_max_age=180 * DAY,
        refresh_token_ttl=180 * DAY, lockout_threshold=1000, log_level="DEBUG",
    )
    assert insecure_findings(settings, deploy=False) == []
    assert all(
        finding.production_only for finding in insecure_findings(settings, deploy=True)
    )


# --- unguarded routes -------------------------------------------------------------------------


async def test_route_findings_name_each_unguarded_route(tmp_path: Path) -> None:
    application = bastion.app.create_app(make_settings(tmp_path / "data"))
    try:
        assert route_findings(application) == []

        @application.get("/mine")
        async def mine() -> None: ...

        @application.get("/open", dependencies=[public()])
        async def open_() -> None: ...

        found = route_findings(application)
        assert found == [Finding("route", "GET /mine declares no policy", production_only=False)]
        assert [str(finding) for finding in found] == ["route: GET /mine declares no policy"]
    finally:
        await application.state.bastion.database.dispose()


def test_the_command_reports_an_unguarded_route_of_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped service has no unguarded route, so one is slipped into the app the command
    builds; the command must report it and fail, even in development."""
    build = bastion.app.create_app

    def with_an_unguarded_route(settings: Settings | None = None) -> FastAPI:
        application = build(settings)

        @application.post("/forgotten")
        async def forgotten() -> None: ...

        return application

    monkeypatch.setattr(bastion.app, "create_app", with_an_unguarded_route)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 1, result.output
    assert result.output == "route: POST /forgotten declares no policy\n"
    assert not (tmp_path / ".bastion").exists()


def test_deploy_reports_every_admin_without_a_second_factor(tmp_path: Path) -> None:
    env = {**PRODUCTION_ENV, "BASTION_DATA_DIR": str(tmp_path / "data")}
    migrated = run_bastion("migrate", cwd=tmp_path, env=env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    created = run_bastion(
        "create-admin", "--username", "root", "--email", "root@example.com",
        cwd=tmp_path, env=env, stdin="an admin's long passphrase here\n",
    )
    assert created.returncode == 0, created.stdout + created.stderr
    result = run_bastion("check", "--deploy", cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert finding_lines(result.stdout) == [
        "account: admin 'root' has no second factor: a stolen password is enough to change "
        "every user; sign in and set up TOTP (POST /auth/mfa/totp, or the console's Account "
        "page)"
    ]

    asyncio.run(_turn_mfa_on(make_settings(tmp_path / "data"), "root"))
    result = run_bastion("check", "--deploy", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "no insecure settings found\n"


async def _turn_mfa_on(settings: Settings, username: str) -> None:
    database = Database.from_settings(settings)
    try:
        async with database.transaction() as session:
            await session.execute(
                update(User).where(User.username == username).values(mfa_enabled=True)
            )
    finally:
        await database.dispose()
