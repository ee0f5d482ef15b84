"""Settings read from ``BASTION_*`` environment variables (or a ``.env`` file).

Production refuses to start on an insecure configuration: the same findings that
``bastion check`` prints become a validation error, so a misconfigured deployment fails
loudly at start instead of serving with weak settings. The findings themselves are
``bastion.config.findings``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bastion.config.findings import (
    ALWAYS_FATAL,
    OWASP_ARGON2_MEMORY_KIB,
    OWASP_ARGON2_TIME_COST,
    insecure_findings,
)
from bastion.security.encryption import EncryptionKeys
from bastion.security.hostport import parse_host_port, web_origin
from bastion.security.ratelimits import parse_limit

CommaList = Annotated[list[str], NoDecode]

ENV_PREFIX = "BASTION_"

SQLITE_FILE_NAME = "bastion.sqlite3"


class Settings(BaseSettings):
    """Every knob of the service; defaults are the embedded development set-up."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        # A refused configuration must not print the secrets it was given.
        hide_input_in_errors=True,
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path(".bastion")
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    issuer: str = "http://127.0.0.1:8000"
    audience: str = "bastion"
    jwt_algorithm: Literal["EdDSA", "ES256", "RS256", "HS256"] = "EdDSA"
    jwt_secret: SecretStr | None = None
    access_token_ttl: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl: int = Field(default=1_209_600, ge=60, le=31_536_000)
    rate_limits_enabled: bool = True
    rate_limit_default: str = "600/minute"
    rate_limit_login: str = "10/minute"
    rate_limit_register: str = "20/hour"
    # Requests that mail someone (forgot-password per address, verification per user).
    rate_limit_mail: str = "10/hour"
    # When Redis does not answer: false refuses every rate-limited request with 503; true
    # lets them through uncounted. Login and token requests are refused either way.
    rate_limit_fail_open: bool = False
    lockout_threshold: int = Field(default=5, ge=1, le=1000)
    lockout_base_seconds: int = Field(default=60, ge=1, le=86_400)
    lockout_max_seconds: int = Field(default=1800, ge=1, le=604_800)
    session_max_age: int = Field(default=2_592_000, ge=60, le=31_536_000)
    password_hash_memory_kib: int = Field(default=OWASP_ARGON2_MEMORY_KIB, ge=8, le=4_194_304)
    password_hash_time_cost: int = Field(default=OWASP_ARGON2_TIME_COST, ge=1, le=100)
    password_hash_parallelism: int = Field(default=1, ge=1, le=64)
    max_body_bytes: int = Field(default=1_048_576, ge=1, le=1_073_741_824)
    # Per worker: open connections from one client address (trusted proxies excepted).
    max_connections_per_address: int = Field(default=100, ge=1, le=100_000)
    # Per user: notes stored, and UTF-8 bytes of their stored titles and bodies.
    notes_max_count: int = Field(default=10_000, ge=1, le=100_000_000)
    notes_max_bytes: int = Field(default=52_428_800, ge=1, le=1_099_511_627_776)
    trusted_proxies: CommaList = Field(default_factory=list)
    # The one forwarded header believed from a trusted proxy; believing both would let a
    # client forge its address through the one its proxy passes on untouched.
    proxy_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    cors_origins: CommaList = Field(default_factory=list)
    allowed_hosts: CommaList = Field(default_factory=lambda: ["127.0.0.1", "localhost"])
    https_redirect: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The service's own origin as browsers reach it: the CSRF origin check, links in mails.
    public_url: str = "http://127.0.0.1:8000"
    # Cookie (browser) sessions: ended after this long without use, and this long in all.
    cookie_idle_ttl: int = Field(default=1800, ge=60, le=86_400)
    cookie_max_ttl: int = Field(default=43_200, ge=60, le=2_592_000)
    database_timeout: float = Field(default=5.0, gt=0, le=60)
    # Mail (verification and reset links): smtp:// (STARTTLS when offered) or smtps://.
    # Unset in development: mails are written as .eml files to <data dir>/outbox/.
    smtp_url: SecretStr | None = None
    mail_from: str = "bastion@localhost"
    # Whether users:write needs a second factor; unset: required in production only.
    admin_mfa: Literal["optional", "required"] | None = None
    # AEAD keys for secrets at rest (TOTP secrets, queued mail): 32 random bytes,
    # base64url, comma-separated to rotate (the first encrypts, all decrypt). Unset in
    # development: generated into <data dir>/encryption.key (0600).
    encryption_key: SecretStr | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        """``warning`` and ``Warning`` mean ``WARNING``, as they do to ``logging``."""
        if isinstance(value, str):
            return value.strip().upper()
        return value

    @field_validator("trusted_proxies", "cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        """Normalised (``10.0.0.5/8`` becomes ``10.0.0.0/8``): uvicorn silently ignores a
        network with host bits set, which would leave the proxy untrusted."""
        networks = []
        for entry in value:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or CIDR: {entry!r}") from None
            networks.append(str(network.network_address if network.num_addresses == 1 else network))
        return networks

    @field_validator("allowed_hosts")
    @classmethod
    def _valid_hosts(cls, value: list[str]) -> list[str]:
        """Checked here, not only when the middleware is built on the first request, so a
        typo stops the start with a settings error."""
        from bastion.middleware.trusted_host import AllowedHosts

        AllowedHosts.parse(value)
        return value

    @field_validator("cors_origins")
    @classmethod
    def _valid_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            host = parse_host_port(parts.netloc)
            if parts.scheme not in {"http", "https"} or host is None or parts.path:
                raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
        return value

    @field_validator(
        "rate_limit_default", "rate_limit_login", "rate_limit_register", "rate_limit_mail"
    )
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        parse_limit(value)
        return value

    @field_validator("issuer")
    @classmethod
    def _valid_issuer(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value

    @field_validator("encryption_key")
    @classmethod
    def _valid_encryption_keys(cls, value: SecretStr | None) -> SecretStr | None:
        """Checked at start (and by every command), never first when a secret is read."""
        if value is not None:
            EncryptionKeys.parse(value.get_secret_value())
        return value

    @field_validator("smtp_url")
    @classmethod
    def _valid_smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        """A URL the sender could never use stops the start, not the first mail."""
        if value is not None:
            from bastion.mail.transport import parse_smtp_url

            parse_smtp_url(value.get_secret_value())
        return value

    @field_validator("mail_from")
    @classmethod
    def _valid_mail_from(cls, value: str) -> str:
        """One plain ASCII address: it goes into every mail's From and Message-ID."""
        local, at, domain = value.rpartition("@")
        if (
            not at
            or not local
            or not domain
            or not value.isascii()
            or any(char.isspace() or char in '<>",;()\\' for char in value)
        ):
            raise ValueError(
                "BASTION_MAIL_FROM must be one plain address, like bastion@example.com"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _valid_public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if (
            web_origin(value) is None
            or parts.path not in {"", "/"}
            or parts.query
            or parts.fragment
        ):
            raise ValueError(f"not an origin (scheme://host[:port]): {value!r}")
        return value

    @model_validator(mode="after")
    def _idle_within_max(self) -> Settings:
        if self.cookie_idle_ttl > self.cookie_max_ttl:
            raise ValueError(
                "BASTION_COOKIE_IDLE_TTL must not exceed BASTION_COOKIE_MAX_TTL"
            )
        return self

    @model_validator(mode="after")
    def _refuse_insecure(self) -> Settings:
        """Production refuses every finding; any environment refuses an HS256 secret too
        short to sign with."""
        found = insecure_findings(self, deploy=self.is_production)
        if not self.is_production:
            found = [finding for finding in found if finding.setting in ALWAYS_FATAL]
        if found:
            where = " in production" if self.is_production else ""
            lines = "\n".join(f"  - {finding}" for finding in found)
            raise ValueError(f"refusing to start{where}:\n{lines}")
        return self

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def public_origin(self) -> str:
        """``BASTION_PUBLIC_URL`` as browsers write it in ``Origin``: scheme, host, and the
        port unless it is the scheme's default."""
        origin = web_origin(self.public_url)
        assert origin is not None  # noqa: S101 (validated above)
        return origin

    @property
    def admin_mfa_required(self) -> bool:
        """``BASTION_ADMIN_MFA``, defaulting to required in production."""
        if self.admin_mfa is None:
            return self.is_production
        return self.admin_mfa == "required"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / SQLITE_FILE_NAME

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL; the embedded default is a SQLite file in the data dir."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{self.sqlite_path.resolve()}"


def env_name(field: str) -> str:
    """The environment variable of the setting ``field``: ``log_level`` is ``BASTION_LOG_LEVEL``."""
    return ENV_PREFIX + field.upper()
