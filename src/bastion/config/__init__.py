"""Settings read from ``BASTION_*`` environment variables, and the findings that refuse them.

``settings`` holds ``Settings`` (what can be configured, and how each value is checked);
``findings`` holds what makes a configuration insecure; ``variables`` the operator's side
(``BASTION_*`` names that are no setting, refusals told in variable names). Import any of
them from here.
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
from bastion.config.settings import ENV_PREFIX, SQLITE_FILE_NAME, CommaList, Settings, env_name
from bastion.config.variables import (
    NOT_SETTINGS,
    UnknownVariable,
    error_lines,
    setting_names,
    unknown_variables,
)

__all__ = [
    "ALWAYS_FATAL",
    "ENV_PREFIX",
    "MAX_ACCESS_TOKEN_TTL",
    "MAX_LOCKOUT_THRESHOLD",
    "MAX_SESSION_SECONDS",
    "MIN_HS256_SECRET_BYTES",
    "NOT_SETTINGS",
    "OWASP_ARGON2_MEMORY_KIB",
    "OWASP_ARGON2_TIME_COST",
    "SQLITE_FILE_NAME",
    "CommaList",
    "Finding",
    "Settings",
    "UnknownVariable",
    "env_name",
    "error_lines",
    "insecure_findings",
    "setting_names",
    "unknown_variables",
]
