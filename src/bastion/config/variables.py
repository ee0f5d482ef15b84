"""The operator's side of the settings: which ``BASTION_*`` variables are not settings, and a
refused configuration told in variable names.

Both speak of ``BASTION_LOG_LEVEL``, never of the field ``log_level``: the operator sets the
variable and may never have seen the code. Neither ever repeats a value: a misspelt
``BASTION_DATABASE_URL`` still holds a password.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values
from pydantic import ValidationError

from bastion.config.settings import ENV_PREFIX, Settings, env_name

# Variables that carry the prefix but are no settings, so never warned about: switches of
# bastion's own test suite (tests/conftest.py keeps them through its clean-up of BASTION_*):
# which fault suite runs (tests/faults/conftest.py), and whether the console's browser test
# updates docs/images/console.png (`make screenshots`). The one list of them.
NOT_SETTINGS = frozenset({"BASTION_FAULTS", "BASTION_UPDATE_SCREENSHOTS"})

# How alike a name must be to a setting's to be suggested (difflib's ratio of the parts after
# the prefix): BASTION_LOG_LEVL finds BASTION_LOG_LEVEL, BASTION_COLOUR finds nothing.
SUGGESTION_CUTOFF = 0.6


def setting_names() -> frozenset[str]:
    """Every ``BASTION_*`` variable that is a setting, upper case."""
    return frozenset(env_name(field) for field in Settings.model_fields)


@dataclass(frozen=True)
class UnknownVariable:
    """A ``BASTION_*`` name that no setting reads; never its value."""

    name: str
    source: str  # "environment", or the .env file it was found in
    suggestion: str | None

    def message(self) -> str:
        where = "" if self.source == "environment" else f" (in {self.source})"
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else ""
        return f"{self.name}{where} is not a setting and is ignored{hint}"


def _suggestion(name: str, known: Iterable[str]) -> str | None:
    """The setting whose name is closest to ``name``, if any is close enough."""
    suffixes = {known_name.removeprefix(ENV_PREFIX): known_name for known_name in known}
    close = difflib.get_close_matches(
        name.upper().removeprefix(ENV_PREFIX), suffixes, n=1, cutoff=SUGGESTION_CUTOFF
    )
    return suffixes[close[0]] if close else None


def _unknown(names: Iterable[str], source: str, known: frozenset[str]) -> list[UnknownVariable]:
    # Settings are read case-insensitively (bastion_log_level is BASTION_LOG_LEVEL), so a
    # lower-case misspelling is one too.
    return [
        UnknownVariable(name, source, _suggestion(name, known))
        for name in sorted(names)
        if name.upper().startswith(ENV_PREFIX)
        and name.upper() not in known
        and name.upper() not in NOT_SETTINGS
    ]


def unknown_variables(
    environ: Mapping[str, str], env_file: Path | None = Path(".env")
) -> list[UnknownVariable]:
    """The ``BASTION_*`` names in ``environ`` and in ``env_file`` (when it exists, as the
    settings would read it) that are not settings, each with the closest setting's name."""
    known = setting_names()
    found = _unknown(environ, "environment", known)
    if env_file is not None and env_file.is_file():
        try:
            keys = list(dotenv_values(env_file, encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            keys = []  # loading the settings says what is wrong with the file
        found += _unknown(keys, str(env_file), known)
    return found


def _message(message: str) -> str:
    # pydantic prefixes what a validator raised; the operator needs only what it said.
    return message.removeprefix("Value error, ")


def error_lines(error: ValidationError) -> list[str]:
    """One line per problem, each naming the ``BASTION_*`` variable; never the value (the
    settings hide input in errors; validators quote only values that are not secret)."""
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        location = problem["loc"]
        if not location:  # a check across settings: its message names the variables
            lines.append(_message(problem["msg"]))
            continue
        name = env_name(str(location[0]))
        entry = "".join(
            f" (entry {part + 1})" if isinstance(part, int) else f".{part}"
            for part in location[1:]
        )
        lines.append(f"{name}{entry}: {_message(problem['msg'])}")
    return lines
