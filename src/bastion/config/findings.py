"""What makes a configuration insecure: one list for the start and for ``bastion check``.

Production refuses to start on any finding (``Settings`` validates itself with this list),
every environment refuses an HS256 secret too short to sign with, and ``bastion check``
prints the same findings, so the command and the start-up can never disagree.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from bastion.config.settings import Settings

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


def insecure_findings(settings: Settings, *, deploy: bool) -> list[Finding]:
    """Every insecure setting; with ``deploy`` also those only refused in production."""
    found = [
        *_mode_findings(settings),
        *_token_findings(settings),
        *_session_findings(settings),
        *_network_findings(settings),
        *_secrets_at_rest_findings(settings),
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
    if urlsplit(settings.public_url).scheme != "https":
        found.append(
            Finding(
                "BASTION_PUBLIC_URL",
                "must be an https:// origin in production (browser sessions need Secure, "
                "__Host- cookies)",
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


def _secrets_at_rest_findings(settings: Settings) -> list[Finding]:
    """Mail and the key for secrets at rest: in development a file in the data directory
    stands in for each; in production both must be configured."""
    found: list[Finding] = []
    if settings.encryption_key is None:
        found.append(
            Finding(
                "BASTION_ENCRYPTION_KEY",
                "not set: TOTP secrets would be encrypted with a key generated into the data "
                "directory; give production a key kept apart from the database and its backups",
                production_only=True,
            )
        )
    if settings.smtp_url is None:
        found.append(
            Finding(
                "BASTION_SMTP_URL",
                "not set: verification and password-reset mails would only be written to "
                "files in the data directory",
                production_only=True,
            )
        )
    return found
