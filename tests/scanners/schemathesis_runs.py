"""Schemathesis against a live server: which runs there are, how one is run, and its verdict.

Three runs, each on a server of its own (``target.scan_target``), so that what one run does to
the accounts (an admin disabling alice, a logout) cannot change what another one sees:

- **user**: alice on every operation but the admin ones and the session-ending ones, with
  bob as her peer: ``object_level_authorization`` replays each of alice's successful reads
  as bob and fails if bob gets her object. The admin operations would only answer her 403;
  the admin run covers them.
- **admin**: admin1 on the admin API, and on the two reads whose answer changes with the
  admin's ``notes:read_all`` (``GET /notes?all=true``, another user's ``GET /notes/{id}``).
  Every other operation answers an admin as it answers alice, and the user run has those.
- **session-ending**: alice on ``POST /auth/logout``, ``/auth/password``, ``/auth/revoke``,
  ``DELETE /auth/sessions/{id}`` and ``/auth/session`` (a browser's sign-in and sign-out; with
  a token, the sign-out ends its session), which end the session of the token they are sent with
  (or another of hers); with ``GET /auth/sessions``, whose ids the stateful phase links to
  the DELETE. They run apart so that the other
  runs keep one session throughout, and because schemathesis logs in through the WFC file's
  login entry, a logout that kills alice's token costs the next case one 401, a new login and
  a replay, not its meaning. The fuzzer never knows alice's password, so a password change
  never succeeds and the login entry keeps working.

Every run: all checks, all four phases, a fixed seed, ``continue-on-failure`` (every failure
of an operation is listed, and a failing run takes as long as a passing one), no example
database or cache (the seed alone decides what is generated, not an earlier run's failures).
Schemathesis writes a JSON report (the verdict, warnings, errors, phases) and an NDJSON event
log (each failing request); ``verdict`` reads both and names every problem with the request
that reproduces it.
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.scanners.target import ADMIN, PEER, USER, ScanTarget, decoded, tool_environment

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
HOOKS = Path(__file__).with_name("st_hooks.py")
SEED = 20260412
PHASES = ("examples", "coverage", "fuzzing", "stateful")
# Warnings a run may report, by (kind, operation), each for a reason that holds for the
# finished service; docs/security-testing.md ("Warnings we accept") says the same. Any other
# warning fails the run.
ALLOWED_WARNINGS: dict[tuple[str, str], str] = {
    ("validation_mismatch", "POST /auth/token"): (
        "the fuzzer cannot know a password or a live refresh token, so every valid-looking "
        "grant is refused, as RFC 6749 §5.2 requires: 400 invalid_grant"
    ),
    ("validation_mismatch", "POST /auth/session"): (
        "as the password grant: the fuzzer cannot know a password, so every valid-looking "
        "sign-in is refused (400 invalid_grant), or without Fetch Metadata or Origin a 403 "
        "(login CSRF)"
    ),
    ("validation_mismatch", "POST /notes/{note_id}/shares"): (
        "a generated username seldom names an existing user other than the owner, so most "
        "valid-looking shares are refused (422), as they must be"
    ),
    ("validation_mismatch", "POST /auth/password"): (
        "the fuzzer cannot know the current password, so every valid-looking change is "
        "refused (400), as it must be"
    ),
    ("validation_mismatch", "POST /auth/email/verify"): (
        "the fuzzer cannot know a mailed token (256 random bits), so every valid-looking "
        "verification is refused (400), as it must be"
    ),
    ("validation_mismatch", "POST /auth/password/reset"): (
        "as POST /auth/email/verify: no mailed token is known, so every reset is a 400"
    ),
    ("validation_mismatch", "POST /auth/mfa/totp"): (
        "as POST /auth/password: the fuzzer cannot know the password, so every set-up is "
        "refused (400)"
    ),
    ("validation_mismatch", "POST /auth/mfa/totp/confirm"): (
        "the fuzzer cannot know a TOTP code of a pending secret (it never has one): 400 or "
        "409"
    ),
    ("validation_mismatch", "DELETE /auth/mfa/totp"): (
        "the fuzzer knows neither the password nor a code: 400, or 409 with no second factor"
    ),
    ("validation_mismatch", "POST /auth/mfa/recovery-codes"): (
        "as DELETE /auth/mfa/totp: 400, or 409 with no second factor"
    ),
}
# Operations where a schema-valid request may be refused for a reason no JSON Schema can
# state: the statuses ``positive_data_acceptance`` accepts there on top of its defaults.
POSITIVE_EXCEPTIONS: dict[str, tuple[tuple[int, ...], str]] = {
    "GET /notes": ((400,), "a cursor is opaque and signed: one this server did not issue is a 400"),
    "GET /admin/users": ((400,), "as GET /notes: an unsigned cursor is a 400"),
    "GET /auth/sessions": ((400,), "as GET /notes: an unsigned cursor is a 400"),
    "GET /admin/audit": ((400,), "as GET /notes: an unsigned cursor is a 400"),
    "POST /auth/password": ((400,), "a wrong current password is a 400 (see ALLOWED_WARNINGS)"),
    "POST /auth/session": ((400,), "wrong credentials: 400 invalid_grant (see ALLOWED_WARNINGS)"),
    "POST /auth/email/verify": ((400,), "an unknown token is a 400 (see ALLOWED_WARNINGS)"),
    "POST /auth/password/reset": (
        (400, 422),
        "an unknown token is a 400 (see ALLOWED_WARNINGS); a password the policy refuses "
        "(common, or holding the username) is a 422, as at registration",
    ),
    "POST /auth/mfa/totp": ((400,), "a wrong password is a 400 (see ALLOWED_WARNINGS)"),
    "POST /auth/mfa/totp/confirm": ((400,), "a wrong code is a 400 (see ALLOWED_WARNINGS)"),
    "DELETE /auth/mfa/totp": ((400,), "a wrong password or code is a 400"),
    "POST /auth/mfa/recovery-codes": ((400,), "a wrong password or code is a 400"),
    "POST /notes/{note_id}/shares": (
        (422,),
        "the username must name an existing user other than the owner: data, not schema",
    ),
}
DEFAULT_POSITIVE_STATUSES = ("2xx", "3xx", "401", "403", "404", "409", "429", "5xx")
SESSION_ENDING = r"^/auth/(logout|password|revoke|session|sessions(/[^/]+)?)$"
# Failures printed in full; the rest are counted (the report files hold all of them).
SHOWN_FAILURES = 40
OUTPUT_TAIL_CHARS = 3000
BODY_CHARS = 400


@dataclass(frozen=True)
class Run:
    """One schemathesis run: as whom, with which peers, on which operations (one regex each:
    repeating ``--exclude-path-regex`` keeps only the last)."""

    name: str
    identity: str
    peers: tuple[str, ...] = ()
    include_path_regex: str | None = None
    exclude_path_regex: str | None = None
    include_name_regex: str | None = None


RUNS = (
    Run(
        "user",
        USER,
        peers=(USER, PEER),
        exclude_path_regex=r"^/(admin/|auth/(logout|password|revoke|session|sessions/[^/]+)$)",
    ),
    Run("admin", ADMIN, include_name_regex=r"^(GET /notes(/\{note_id\})?|[A-Z]+ /admin/.*)$"),
    Run("session-ending", USER, include_path_regex=SESSION_ENDING),
)


@dataclass(frozen=True)
class Depth:
    """How much to generate: ``max_examples`` per operation and phase; ``max_time`` (seconds)
    makes fuzzing and stateful testing repeat until it is spent; ``timeout`` ends a run that
    hangs."""

    name: str
    max_examples: int
    max_time: int | None
    timeout: float


@dataclass(frozen=True)
class Failure:
    """One failed check on one request."""

    operation: str
    code: str
    title: str
    message: str
    identity: str
    status: int | None
    response: str
    curl: str
    phase: str

    @property
    def key(self) -> tuple[str, str, int | None, str]:
        """What makes two failures the same one: the operation, the check, and the error the
        server answered (a success's body is not what tells two failures apart)."""
        return (self.operation, self.code, self.status, error_of(self.response))

    def describe(self) -> str:
        message = "\n".join(f"      {line}" for line in self.message.splitlines()[:4])
        return (
            f"- {self.operation}: {self.code} {self.title} ({self.phase}, as {self.identity})\n"
            f"{message}\n"
            f"      -> {self.status}: {self.response[:BODY_CHARS]}\n"
            f"      {self.curl}"
        )


@dataclass
class Report:
    """What one schemathesis run found."""

    run: Run
    backend: str
    workdir: Path
    document: dict[str, Any]
    failures: list[Failure] = field(default_factory=list)
    exit_code: int = 0
    output: str = ""
    elapsed: float = 0.0

    @property
    def warnings(self) -> dict[str, list[str]]:
        """Warning kind -> the operations it names, for kinds that named any."""
        found: dict[str, Any] = self.document.get("warnings") or {}
        return {kind: list(labels) for kind, labels in found.items() if labels}

    def summary(self) -> str:
        """One line for the terminal: what was tested, how long it took, what was found."""
        cases = (self.document.get("test_cases") or {}).get("generated", 0)
        operations = (self.document.get("operations") or {}).get("tested", 0)
        unique = len({failure.key for failure in self.failures})
        return (
            f"schemathesis {self.run.name} on {self.backend}: {operations} operations, "
            f"{cases} cases, {self.elapsed:.0f} s: {unique} failures, "
            f"{sum(len(v) for v in self.warnings.values())} warnings"
        )

    def problems(
        self, allowed_warnings: Mapping[tuple[str, str], str] = ALLOWED_WARNINGS
    ) -> list[str]:
        """Everything that fails the run, each said in full; empty when the run is clean."""
        document = self.document
        problems: list[str] = []
        if self.exit_code not in (0, 1):
            problems.append(f"schemathesis exited {self.exit_code}:\n{self.output_tail()}")
        stopped = document.get("stop_reason")
        if not document.get("complete") or stopped not in ("completed", "max_time"):
            problems.append(
                f"the run did not complete (stop reason {stopped!r}):\n"
                f"{self.output_tail()}"
            )
        operations = document.get("operations") or {}
        if not operations.get("selected") or operations.get("tested") != operations.get("selected"):
            problems.append(f"operations selected and tested differ: {operations}")
        phases = document.get("phases") or {}
        for phase in PHASES:
            status = (phases.get(phase) or {}).get("status")
            if status is None or status == "error":
                problems.append(f"phase {phase}: {phases.get(phase)}")
        for error in document.get("errors") or []:
            problems.append(
                f"error: {error['title']} ({error['count']}x); the output:\n{self.output_tail()}"
            )
        for kind, labels in sorted(self.warnings.items()):
            unexplained = [label for label in labels if (kind, label) not in allowed_warnings]
            if unexplained:
                problems.append(f"warning {kind}: {', '.join(unexplained)}")
        problems.extend(self._failure_problems())
        return problems

    def _failure_problems(self) -> list[str]:
        unique: dict[tuple[str, str, int | None, str], Failure] = {}
        for failure in self.failures:
            unique.setdefault(failure.key, failure)
        lines = [failure.describe() for failure in list(unique.values())[:SHOWN_FAILURES]]
        if len(unique) > SHOWN_FAILURES:
            lines.append(f"... and {len(unique) - SHOWN_FAILURES} more in the NDJSON report")
        groups = self.document.get("failures") or []
        if groups and not unique:
            # The event log could not be read; the summary still says what failed.
            lines.extend(
                f"- {group['code']} {group['title']}: {group['operations']}" for group in groups
            )
        return lines

    def output_tail(self) -> str:
        return self.output[-OUTPUT_TAIL_CHARS:]


def error_of(body: str) -> str:
    """The error a body says (problem details or an OAuth2 error) less the ``request_id``
    every answer has its own of; empty for anything else."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(parsed, dict) or not parsed.keys() & {"detail", "error"}:
        return ""
    parsed.pop("request_id", None)
    return json.dumps(parsed, sort_keys=True)


def toml_value(value: object) -> str:
    """A TOML literal for the few kinds of value a config here holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def toml_document(tables: dict[str, dict[str, object]]) -> str:
    """``{"": top-level keys, "a.b": keys of [a.b]}`` as TOML text."""
    lines: list[str] = []
    for table, values in tables.items():
        if table:
            lines.append(f"\n[{table}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def positive_exceptions_text() -> str:
    """``POSITIVE_EXCEPTIONS`` as the config's per-operation tables."""
    blocks = []
    for name, (statuses, reason) in POSITIVE_EXCEPTIONS.items():
        expected = [*DEFAULT_POSITIVE_STATUSES, *map(str, statuses)]
        blocks.append(
            f"\n# {reason}\n[[operations]]\ninclude-name = {toml_value(name)}\n"
            f"checks.positive_data_acceptance.expected-statuses = {toml_value(expected)}\n"
        )
    return "".join(blocks)


def config_text(run: Run, target: ScanTarget, reports: Path) -> str:
    """The run's ``schemathesis.toml``: what the CLI cannot say (peers, the hooks file,
    report paths, sanitizing only the bearer token so a reproduction shows the rest)."""
    wfc: dict[str, object] = {"path": str(target.wfc_file), "user": run.identity}
    if run.peers:
        wfc["peers"] = list(run.peers)
    return toml_document(
        {
            "": {"seed": SEED, "hooks": str(HOOKS), "continue-on-failure": True},
            "auth.wfc": wfc,
            "generation": {"database": "none"},
            # The document has no examples: one generated case each, so the phase runs.
            "phases.examples": {"fill-missing": True},
            "cache": {"enabled": False},
            "reports.json": {"path": str(reports / "report.json")},
            "reports.ndjson": {"path": str(reports / "events.ndjson")},
            "output.sanitization": {
                "keys-to-sanitize": ["authorization"],
                "sensitive-markers": ["authorization"],
            },
        }
    ) + positive_exceptions_text()


def command(run: Run, depth: Depth, target: ScanTarget, config: Path) -> list[str]:
    args = [str(SCHEMATHESIS), "--config-file", str(config), "run"]
    args += [f"{target.base_url}/openapi.json", "--checks", "all", "--phases", ",".join(PHASES)]
    args += ["--seed", str(SEED), "--max-examples", str(depth.max_examples), "--workers", "1"]
    args += ["--request-timeout", "30", "--no-color"]
    if depth.max_time is not None:
        args += ["--max-time", str(depth.max_time)]
    if run.include_path_regex:
        args += ["--include-path-regex", run.include_path_regex]
    if run.exclude_path_regex:
        args += ["--exclude-path-regex", run.exclude_path_regex]
    if run.include_name_regex:
        args += ["--include-name-regex", run.include_name_regex]
    return args


def run_schemathesis(run: Run, depth: Depth, target: ScanTarget) -> Report:
    """Runs schemathesis against ``target`` and reads its reports; fails the test, saying
    why, if it cannot start, hangs, or leaves no report."""
    if not SCHEMATHESIS.exists():
        pytest.fail(f"{SCHEMATHESIS} is missing: it is a dev dependency, run `make .venv`")
    workdir = target.root / f"schemathesis-{run.name}"
    reports = workdir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    config = workdir / "schemathesis.toml"
    config.write_text(config_text(run, target, reports), encoding="utf-8")
    argv = command(run, depth, target, config)
    started = time.monotonic()
    try:
        result = subprocess.run(
            argv,
            cwd=workdir,
            env=tool_environment(),
            capture_output=True,
            text=True,
            timeout=depth.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = decoded(exc.stdout) + decoded(exc.stderr)
        pytest.fail(
            f"schemathesis {run.name} did not finish within {depth.timeout:.0f} s:\n"
            f"{shlex.join(argv)}\n{output[-OUTPUT_TAIL_CHARS:]}\n"
            f"server log:\n{target.server.log_tail()}"
        )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    (workdir / "output.txt").write_text(output, encoding="utf-8")
    json_report = reports / "report.json"
    if not json_report.exists():
        pytest.fail(
            f"schemathesis {run.name} exited {result.returncode} without a report:\n"
            f"{shlex.join(argv)}\n{output[-OUTPUT_TAIL_CHARS:]}"
        )
    document = json.loads(json_report.read_text(encoding="utf-8"))
    failures = list(read_failures(reports / "events.ndjson", run.identity))
    return Report(
        run, target.backend, workdir, document, failures, result.returncode, output, elapsed
    )


def read_failures(events: Path, identity: str) -> Iterator[Failure]:
    """Every failed check in the NDJSON event log, with the request it was made on.
    ``identity`` is whom the run acts as: schemathesis names it on a case only when the
    WFC file's users take turns (peers)."""
    if not events.exists():
        return
    with events.open(encoding="utf-8") as lines:
        for line in lines:
            if '"ScenarioFinished"' not in line[:40]:
                continue
            scenario = json.loads(line)["ScenarioFinished"]
            recorder = scenario.get("recorder") or {}
            for case_id, checks in (recorder.get("checks") or {}).items():
                for check in checks:
                    if check.get("status") != "failure":
                        continue
                    phase = scenario.get("phase", "?")
                    yield _failure(check, case_id, recorder, phase, identity)


def _failure(
    check: dict[str, Any], case_id: str, recorder: dict[str, Any], phase: str, identity: str
) -> Failure:
    info = (check.get("failure_info") or {}).get("failure") or {}
    case = ((recorder.get("cases") or {}).get(case_id) or {}).get("value") or {}
    interaction = (recorder.get("interactions") or {}).get(case_id) or {}
    request = interaction.get("request") or {}
    response = interaction.get("response") or {}
    identity = case.get("auth_identity") or identity
    return Failure(
        operation=info.get("operation") or f"{case.get('method')} {case.get('path')}",
        code=info.get("code", "?"),
        title=info.get("title", check.get("name", "?")),
        message=info.get("message", ""),
        identity=identity,
        status=response.get("status_code"),
        response=_body_text(response.get("content")),
        curl=curl(request, identity) if request else "(no request recorded)",
        phase=phase,
    )


def _body_text(body: object) -> str:
    """A recorded body (``{"$base64": ...}`` in the event log) as text."""
    if isinstance(body, dict) and "$base64" in body:
        return base64.b64decode(body["$base64"]).decode("utf-8", errors="backslashreplace")
    if body is None:
        return ""
    return body if isinstance(body, str) else json.dumps(body)


def curl(request: dict[str, Any], identity: str) -> str:
    """A curl command that sends the recorded request again (the bearer token stays out of
    the report; the placeholder says whose to use)."""
    parts = ["curl", "-X", str(request.get("method", "GET"))]
    for name, values in (request.get("headers") or {}).items():
        for value in values if isinstance(values, list) else [values]:
            if name.lower() == "authorization":
                value = f"Bearer <{identity}'s access token>"
            parts += ["-H", f"{name}: {value}"]
    body = request.get("body")
    if body is not None:
        parts += ["--data-binary", _body_text(body)]
    parts.append(str(request.get("uri", "")))
    return shlex.join(parts)
