"""Settings read from ``BASTION_*`` environment variables (or a ``.env`` file).

Production refuses to start on an insecure configuration: the same findings that
``bastion check`` prints become a validation error, so a misconfigured deployment fails
loudly at start instead of serving with weak settings.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bastion.security.hostport import parse_host_port
from bastion.security.ratelimits import parse_limit

CommaList = Annotated[list[str], NoDecode]

SQLITE_FILE_NAME = "bastion.sqlite3"
MIN_HS256_SECRET_BYTES = 32
# Findings that stop the service in every environment, not only in production.
ALWAYS_FATAL = frozenset({"BASTION_JWT_SECRET"})
# OWASP Password Storage Cheat Sheet, Argon2id minimum: m=19 MiB, t=2, p=1.
OWASP_ARGON2_MEMORY_KIB = 19_456
OWASP_ARGON2_TIME_COST = 2
# Production ceilings on how long a credential lasts: an access token is a bearer credential
# (whoever holds it is the user until it expires), and a session should end in the password
# again at some point.
MAX_ACCESS_TOKEN_TTL = 3_600
MAX_SESSION_SECONDS = 90 * 86_400
# NIST SP 800-63B-4 (rate limiting): at most 100 consecutive failed attempts on one account.
MAX_LOCKOUT_THRESHOLD = 100


@dataclass(frozen=True, slots=True)
class Finding:
    """One insecure setting: the variable to change and why."""

    setting: str
    message: str
    production_only: bool

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


class Settings(BaseSettings):
    """Every knob of the service; defaults are the embedded development set-up."""

    model_config = SettingsConfigDict(
        env_prefix="BASTION_",
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
    trusted_proxies: CommaList = Field(default_factory=list)
    # The one forwarded header believed from a trusted proxy; believing both would let a
    # client forge its address through the one its proxy passes on untouched.
    proxy_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    cors_origins: CommaList = Field(default_factory=list)
    allowed_hosts: CommaList = Field(default_factory=lambda: ["127.0.0.1", "localhost"])
    https_redirect: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    database_timeout: float = Field(default=5.0, gt=0, le=60)

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

    @field_validator("rate_limit_default", "rate_limit_login", "rate_limit_register")
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


def insecure_findings(settings: Settings, *, deploy: bool) -> list[Finding]:
    """Every insecure setting; with ``deploy`` also those only refused in production."""
    found = [
        *_mode_findings(settings),
        *_token_findings(settings),
        *_session_findings(settings),
        *_network_findings(settings),
    ]
    if deploy:
        return found
    return [finding for finding in found if not finding.production_only]


def _mode_findings(settings: Settings) -> list[Finding]:
    found: list[Finding] = []
    if not settings.is_production:
        # Only --deploy asks, so this is never a reason for production itself to refuse.
        found.append(
            Finding(
                "BASTION_ENV",
                f"{settings.env} mode: the service starts whatever the other settings say; set "
                "production so that every process refuses an insecure configuration",
                production_only=True,
            )
        )
    if settings.log_level == "DEBUG":
        # Libraries' debug records go to the log too (the database loggers are held back,
        # see logs.py); their free text is beyond redaction by field name.
        found.append(
            Finding(
                "BASTION_LOG_LEVEL",
                "DEBUG turns on every library's debug records, whose free text redaction by "
                "field name cannot vet",
                production_only=True,
            )
        )
    return found


def _token_findings(settings: Settings) -> list[Finding]:
    found: list[Finding] = []
    if settings.jwt_algorithm == "HS256":
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
        if len(secret.encode()) < MIN_HS256_SECRET_BYTES:
            found.append(
                Finding(
                    "BASTION_JWT_SECRET",
                    f"HS256 needs a random secret of at least {MIN_HS256_SECRET_BYTES} bytes",
                    production_only=False,
                )
            )
    if (
        settings.password_hash_memory_kib < OWASP_ARGON2_MEMORY_KIB
        or settings.password_hash_time_cost < OWASP_ARGON2_TIME_COST
    ):
        found.append(
            Finding(
                "BASTION_PASSWORD_HASH_MEMORY_KIB",
                "Argon2id below OWASP's minimum (19456 KiB, time cost 2) makes stolen hashes "
                "cheap to crack",
                production_only=True,
            )
        )
    if urlsplit(settings.issuer).scheme != "https":
        found.append(
            Finding(
                "BASTION_ISSUER",
                "must be an https:// URL in production (clients reach the issuer over TLS)",
                production_only=True,
            )
        )
    return found


def _session_findings(settings: Settings) -> list[Finding]:
    """How long a stolen credential keeps working, and how hard passwords may be guessed."""
    found: list[Finding] = []
    if settings.access_token_ttl > MAX_ACCESS_TOKEN_TTL:
        found.append(
            Finding(
                "BASTION_ACCESS_TOKEN_TTL",
                f"{settings.access_token_ttl} s is longer than {MAX_ACCESS_TOKEN_TTL} s: a "
                "leaked access token works that long; keep it short and let clients refresh",
                production_only=True,
            )
        )
    # No check of BASTION_REFRESH_TOKEN_TTL of its own: a refresh token never outlives its
    # session, so the session's absolute lifetime bounds every refresh chain.
    if settings.session_max_age > MAX_SESSION_SECONDS:
        found.append(
            Finding(
                "BASTION_SESSION_MAX_AGE",
                f"{settings.session_max_age} s is longer than 90 days: a login (and every "
                "refresh token of it) lasts that long without the password",
                production_only=True,
            )
        )
    if settings.lockout_threshold > MAX_LOCKOUT_THRESHOLD:
        found.append(
            Finding(
                "BASTION_LOCKOUT_THRESHOLD",
                f"{settings.lockout_threshold} failed logins before an account locks; NIST SP "
                f"800-63B allows at most {MAX_LOCKOUT_THRESHOLD}",
                production_only=True,
            )
        )
    return found


def _network_findings(settings: Settings) -> list[Finding]:
    found: list[Finding] = []
    if "*" in settings.cors_origins:
        found.append(
            Finding(
                "BASTION_CORS_ORIGINS",
                "'*' lets every site call the API; list the allowed origins",
                production_only=False,
            )
        )
    http_origins = [origin for origin in settings.cors_origins if origin.startswith("http://")]
    if http_origins:
        found.append(
            Finding(
                "BASTION_CORS_ORIGINS",
                f"plain-HTTP origins in production: {', '.join(http_origins)}",
                production_only=True,
            )
        )
    if "*" in settings.allowed_hosts:
        found.append(
            Finding(
                "BASTION_ALLOWED_HOSTS",
                "'*' accepts any Host header; list the host names the service answers to",
                production_only=True,
            )
        )
    for entry in settings.trusted_proxies:
        if ipaddress.ip_network(entry, strict=False).prefixlen == 0:
            found.append(
                Finding(
                    "BASTION_TRUSTED_PROXIES",
                    f"{entry} trusts every peer, so any client can forge its address",
                    production_only=False,
                )
            )
    if not settings.rate_limits_enabled:
        found.append(
            Finding(
                "BASTION_RATE_LIMITS_ENABLED",
                "rate limiting is off; brute force and floods are unchecked",
                production_only=True,
            )
        )
    return found
