"""Settings: comma lists, validation, and the production refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bastion.config import Settings, insecure_findings
from tests.conftest import make_settings

SECURE_PRODUCTION = {
    "env": "production",
    "issuer": "https://id.example.com",
    "public_url": "https://id.example.com",
    "allowed_hosts": ["id.example.com"],
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
