"""Settings read from ``BASTION_*`` environment variables, and the findings that refuse them.

``settings`` holds ``Settings`` (what can be configured, and how each value is checked);
``findings`` holds what makes a configuration insecure. Import either from here.
"""

from bastion.config.findings import (
    ALWAYS_FATAL,
    MAX_ACCESS_TOKEN_TTL,
    MAX_LOCKOUT_THRESHOLD,
    MAX_SESSION_SECONDS,
    MIN_HS256_SECRET_BYTES,
    OWASP_ARGON2_MEMORY_KIB,
    OWASP_ARGON2_TIME_COST,
    Finding,
    insecure_findings,
)
from bastion.config.settings import SQLITE_FILE_NAME, CommaList, Settings

__all__ = [
    "ALWAYS_FATAL",
    "MAX_ACCESS_TOKEN_TTL",
    "MAX_LOCKOUT_THRESHOLD",
    "MAX_SESSION_SECONDS",
    "MIN_HS256_SECRET_BYTES",
    "OWASP_ARGON2_MEMORY_KIB",
    "OWASP_ARGON2_TIME_COST",
    "SQLITE_FILE_NAME",
    "CommaList",
    "Finding",
    "Settings",
    "insecure_findings",
]
