"""Settings: comma lists, validation, and the production refusal; the operator's side:
refusals in variable names, and ``BASTION_*`` names that are no setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from bastion.config import (
    NOT_SETTINGS,
    Settings,
    UnknownVariable,
    error_lines,
    insecure_findings,
    setting_names,
    unknown_variables,
)
from tests.conftest import (
    FAULT_SUITE_VARIABLE,
    SCREENSHOTS_VARIABLE,
    TEST_ENCRYPTION_KEY,
    make_settings,
)

CONFIGURATION_PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

SECURE_PRODUCTION = {
    "env": "production",
    "issuer": "https://id.example.com",
    "public_url": "https://id.example.com",
    "allowed_hosts": ["id.example.com"],
    "encryption_key": TEST_ENCRYPTION_KEY,
    "smtp_url": "smtps://mail.example.com",
}


def test_defaults_are_the_embedded_development_setup(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    assert settings.env == "development"
    assert settings.uses_embedded_database
    assert settings.resolved_database_url().startswith("sqlite+aiosqlite:///")
    assert settings.jwt_algorithm == "EdDSA"
    assert settings.max_body_bytes == 1_048_576
    assert settings.allowed_hosts == ["127.0.0.1", "localhost"]
    assert settings.trusted_proxies == []
    assert settings.rate_limits_enabled
    assert (settings.rate_limit_default, settings.rate_limit_login) == ("600/minute", "10/minute")
    assert not settings.rate_limit_fail_open


def test_comma_separated_lists_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BASTION_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16, 172.16.5.4/12, ::1")
    monkeypatch.setenv("BASTION_CORS_ORIGINS", "https://app.example.com")
    settings = make_settings(tmp_path)
    # Host bits are cleared: uvicorn would silently ignore "172.16.5.4/12".
    assert settings.trusted_proxies == ["10.0.0.1", "192.168.0.0/16", "172.16.0.0/12", "::1"]
    assert settings.cors_origins == ["https://app.example.com"]


def test_origins_with_a_port_or_an_ipv6_host_are_accepted(tmp_path: Path) -> None:
    origins = ["https://app.example.com:8443", "http://[::1]:8000", "http://127.0.0.1:3000"]
    assert make_settings(tmp_path, cors_origins=origins).cors_origins == origins


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("trusted_proxies", ["not-an-ip"]),
        ("cors_origins", ["javascript:alert(1)"]),
        ("cors_origins", ["https://example.com/path"]),
        # Ports no browser can send in an Origin: such an entry would never match.
        ("cors_origins", ["https://example.com:99999"]),
        ("cors_origins", ["https://example.com:https"]),
        ("cors_origins", ["https://example.com:"]),
        ("cors_origins", ["http://::1"]),  # an IPv6 host must be bracketed
        ("issuer", "ftp://example.com"),
        ("max_body_bytes", 0),
        ("lockout_threshold", 0),
        ("jwt_algorithm", "none"),
        ("env", "staging"),
    ],
)
def test_invalid_values_are_refused(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        make_settings(tmp_path, **{field: value})


def test_production_starts_on_a_secure_configuration(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **SECURE_PRODUCTION)
    assert settings.is_production
    assert insecure_findings(settings, deploy=True) == []


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"issuer": "http://id.example.com"}, "BASTION_ISSUER"),
        ({"public_url": "http://id.example.com"}, "BASTION_PUBLIC_URL"),
        ({"jwt_algorithm": "HS256", "jwt_secret": "short"}, "BASTION_JWT_SECRET"),
        ({"jwt_algorithm": "HS256"}, "BASTION_JWT_SECRET"),
        ({"cors_origins": ["*"]}, "BASTION_CORS_ORIGINS"),
        ({"cors_origins": ["http://app.example.com"]}, "BASTION_CORS_ORIGINS"),
        ({"allowed_hosts": ["*"]}, "BASTION_ALLOWED_HOSTS"),
        ({"trusted_proxies": ["0.0.0.0/0"]}, "BASTION_TRUSTED_PROXIES"),
        ({"trusted_proxies": ["::/0"]}, "BASTION_TRUSTED_PROXIES"),
        ({"rate_limits_enabled": False}, "BASTION_RATE_LIMITS_ENABLED"),
    ],
)
def test_production_refuses_insecure_settings_and_names_them(
    tmp_path: Path, overrides: dict[str, object], named: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(tmp_path, **{**SECURE_PRODUCTION, **overrides})
    assert "refusing to start in production" in str(refused.value)
    assert named in str(refused.value)


def test_hs256_with_a_long_secret_is_accepted(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, **SECURE_PRODUCTION, jwt_algorithm="HS256", jwt_secret="x" * 32
    )
    assert insecure_findings(settings, deploy=True) == []


def test_development_reports_only_findings_insecure_everywhere(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, cors_origins=["*"], rate_limits_enabled=False)
    everywhere = insecure_findings(settings, deploy=False)
    assert [finding.setting for finding in everywhere] == ["BASTION_CORS_ORIGINS"]
    deploy = {finding.setting for finding in insecure_findings(settings, deploy=True)}
    assert {"BASTION_ISSUER", "BASTION_RATE_LIMITS_ENABLED"} <= deploy


def test_secrets_do_not_appear_in_the_settings_repr(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        jwt_algorithm="HS256",
        jwt_secret="super-secret-signing-key-0123456789",
        database_url="postgresql+asyncpg://bastion:dbpassword@db/bastion",
    )
    assert "super-secret-signing-key" not in repr(settings)
    assert "dbpassword" not in repr(settings)


def test_hs256_without_a_long_secret_is_refused_in_development_too(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(tmp_path, jwt_algorithm="HS256", jwt_secret="too-short")
    assert "BASTION_JWT_SECRET" in str(refused.value)
    assert "too-short" not in str(refused.value)


@pytest.mark.parametrize("hosts", ["exa mple.com", "*.*.example.com", "api.*.com", "a/b"])
def test_a_malformed_allowed_host_is_a_settings_error(tmp_path: Path, hosts: str) -> None:
    with pytest.raises(ValidationError, match="allowed_hosts"):
        make_settings(tmp_path, allowed_hosts=hosts)


@pytest.mark.parametrize(
    ("given", "level"),
    [("warning", "WARNING"), ("Warning", "WARNING"), ("debug", "DEBUG"), (" error ", "ERROR")],
)
def test_the_log_level_is_accepted_in_any_case(tmp_path: Path, given: str, level: str) -> None:
    assert make_settings(tmp_path, log_level=given).log_level == level


def test_the_log_level_keeps_its_allowed_set(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        make_settings(tmp_path, log_level="verbose")


def test_a_refusal_names_each_variable_one_line_each(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(
            tmp_path,
            max_body_bytes="lots",
            log_level="chatty",
            allowed_hosts=["api.example.com", 5],
            database_url=12345678,  # a secret's value, of the wrong type
        )
    lines = error_lines(refused.value)
    assert len(lines) == 4, lines
    assert {line.split(":", 1)[0] for line in lines} == {
        "BASTION_MAX_BODY_BYTES",
        "BASTION_LOG_LEVEL",
        "BASTION_ALLOWED_HOSTS (entry 2)",
        "BASTION_DATABASE_URL",
    }
    text = "\n".join(lines)
    for value in ("lots", "chatty", "12345678"):
        assert value not in text
    assert not re.search(r"(?<![A-Z_])(max_body_bytes|log_level|database_url)", text), text


def test_a_refusal_across_settings_names_the_variables(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(tmp_path, jwt_algorithm="HS256", jwt_secret="tiny-secret")
    (line,) = error_lines(refused.value)
    assert line.startswith("refusing to start:")  # no "Value error, " from pydantic
    assert "BASTION_JWT_SECRET" in line
    assert "tiny-secret" not in line


def test_unknown_variables_are_named_with_the_closest_setting(tmp_path: Path) -> None:
    environ = {
        "BASTION_LOG_LEVL": "debug",
        "bastion_redis_ur": "redis://:hunter2@cache",  # names are case-insensitive
        "BASTION_COLOUR": "blue",
        "BASTION_LOG_LEVEL": "INFO",  # settings, in either case
        "bastion_data_dir": "/srv",
        "HOME": "/root",  # not ours
    }
    assert unknown_variables(environ, env_file=tmp_path / "absent.env") == [
        UnknownVariable("BASTION_COLOUR", "environment", None),
        UnknownVariable("BASTION_LOG_LEVL", "environment", "BASTION_LOG_LEVEL"),
        UnknownVariable("bastion_redis_ur", "environment", "BASTION_REDIS_URL"),
    ]
    message = UnknownVariable("bastion_redis_ur", "environment", "BASTION_REDIS_URL").message()
    assert message == (
        "bastion_redis_ur is not a setting and is ignored; did you mean BASTION_REDIS_URL?"
    )


def test_unknown_keys_of_the_env_file_are_named_without_their_values(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "BASTION_ISUER=https://id.example.com\nBASTION_JWT_SECRT=s3cr3t-value\n"
        "BASTION_ISSUER=https://id.example.com\nOTHER_TOOL=1\n",
        encoding="utf-8",
    )
    found = unknown_variables({}, env_file=env_file)
    assert [(v.name, v.source, v.suggestion) for v in found] == [
        ("BASTION_ISUER", str(env_file), "BASTION_ISSUER"),
        ("BASTION_JWT_SECRT", str(env_file), "BASTION_JWT_SECRET"),
    ]
    assert all("s3cr3t" not in variable.message() for variable in found)
    assert f"(in {env_file})" in found[0].message()


def test_the_test_suites_switches_are_not_warned_about() -> None:
    """The exemptions are the variables tests/conftest.py keeps through its clean-up."""
    assert {FAULT_SUITE_VARIABLE, SCREENSHOTS_VARIABLE} == NOT_SETTINGS
    environ = dict.fromkeys(NOT_SETTINGS, "1")
    assert unknown_variables(environ, env_file=None) == []
    assert not NOT_SETTINGS & setting_names()


def test_every_setting_is_documented_and_every_documented_variable_is_a_setting() -> None:
    """The warning's idea of a setting is the configuration page's."""
    page = CONFIGURATION_PAGE.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(BASTION_[A-Z_]+)`", page, re.MULTILINE))
    assert documented == setting_names()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("smtp_url", "http://mail.example.com"),
        ("smtp_url", "smtp://"),
        ("smtp_url", "smtps://:secret-password@mail.example.com"),
        ("mail_from", "two words@example.com"),
        ("mail_from", "bastion@example.com\r\nBcc: victim@example.com"),
        ("mail_from", "Bastion <bastion@example.com>"),
        ("encryption_key", "c2hvcnQ"),
    ],
)
def test_mail_and_key_settings_are_checked_at_start_without_echoing_them(
    tmp_path: Path, field: str, value: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(tmp_path, **{field: value})
    assert value not in str(refused.value)
    assert "secret-password" not in str(refused.value)
