"""sqlmap on every query and path parameter of every operation of the live OpenAPI document.

One sqlmap process per parameter (a *target*), authenticated as the first of alice and the
admin whose token carries the operation's scopes, with every other part of the request valid
(real ids, a real page cursor, a valid body), so that only the value under test is odd:
otherwise the server would refuse each request for another reason before the value reached
a query. ``--dbms`` names the backend under test, so the payloads are the ones its SQL
dialect would fall for; level 5 and risk 3 are sqlmap's most thorough.

sqlmap exits 0 whatever it finds, so the verdict is read from what it writes: its JSON report
(``--report-json``) and its console output, which must end normally and say, for the
parameter, that it "does not seem to be injectable". An injection point, a parameter sqlmap
calls vulnerable (or, heuristically, injectable), a 5xx among its answers, a ``[CRITICAL]`` or
``[ERROR]`` line that is not one of the known harmless ones, or a run that did not finish all
count against the target.

Offline: sqlmap talks only to the URL it is given (no ``--update``, ``--check-internet``,
``--dns-domain`` or out-of-band options here), ``--ignore-proxy`` keeps a system proxy out of
the loopback, and its files (session, log, report) go to the test's tmp dir.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from tests.e2e.api import Account
from tests.scanners.target import ADMIN, USER, ScanTarget, decoded, tool_environment

SQLMAP = Path(sys.executable).parent / "sqlmap"
LEVEL = 5
RISK = 3
# sqlmap's own limit per target; the process is ended some time after it.
TIME_LIMIT = 180
UNION_COLUMNS = "1-20"
PROCESS_TIMEOUT = TIME_LIMIT + 60
DBMS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
# Console lines that say a target is (or may be) injectable or otherwise vulnerable.
FINDINGS = re.compile(
    r"is vulnerable|identified the following injection point"
    r"|parameter '[^']*' is '[^']*' injectable|might be injectable|might be vulnerable to",
    re.IGNORECASE,
)
NOT_INJECTABLE = re.compile(r"parameter '(?P<name>[^']*)' does not seem to be injectable")
PROBLEM_LINE = re.compile(r"\[(CRITICAL|ERROR)\]")
# The [CRITICAL] and [ERROR] lines of a clean run: its verdict; a page that differs on every
# request (a note's updated_at on each PATCH), which sqlmap copes with by comparing text
# only; and an answer without a body (204), where it compares status codes instead.
HARMLESS = re.compile(
    r"all tested parameters do not appear to be injectable"
    r"|target URL content appears to be heavily dynamic"
    r"|error checking the stability of page because of lack of content"
)
SERVER_ERRORS = re.compile(r"\b5\d\d \([^)]*\) - \d+ times")
FINISHED = "[*] ending @"
# Questions sqlmap would ask about parts of the request that are not the target (the JSON
# body of a PATCH or POST, the headers level 5 would try too), and one that costs minutes for
# nothing: where every payload gets the same 422, sqlmap may take a parameter for a candidate
# and then brute-force UNION columns with random integers (four minutes measured) before its
# false-positive check dismisses it. A real injection is found by the other techniques.
ANSWERS = "JSON data found=N,other non-custom=N,random integer value=N"
# Valid values the harness cannot take from the schema: a body per operation that needs one.
BODIES: dict[str, dict[str, Any]] = {
    "PATCH /notes/{note_id}": {"title": "a title sqlmap may change"},
    "POST /notes/{note_id}/shares": {"username": "bob"},
    "PATCH /admin/users/{user_id}": {"disabled": False},
}
SINCE = "2000-01-01T00:00:00Z"


@dataclass(frozen=True)
class Target:
    """One parameter of one operation, and the request that carries it."""

    operation: str
    location: str  # "query" or "path"
    parameter: str
    identity: str
    url: str  # with every parameter filled in; a path target carries sqlmap's "*" marker
    method: str
    body: dict[str, Any] | None

    @property
    def label(self) -> str:
        return f"{self.operation} {self.location} {self.parameter!r} as {self.identity}"


@dataclass
class Result:
    """What one sqlmap run said about one target."""

    target: Target
    backend: str
    command: list[str]
    returncode: int
    output: str
    report: dict[str, Any] | None
    elapsed: float
    workdir: Path

    def findings(self) -> list[str]:
        """Evidence that the target is injectable, or that the server failed under it."""
        found = [line.strip() for line in self.output.splitlines() if FINDINGS.search(line)]
        if self.report and self.report.get("data"):
            found.append(f"sqlmap's report: {json.dumps(self.report['data'])[:1000]}")
        found += [f"server errors: {match}" for match in SERVER_ERRORS.findall(self.output)]
        return found

    def errors(self) -> list[str]:
        """Why this run's silence would not mean "not injectable"."""
        errors: list[str] = []
        if self.returncode != 0:
            errors.append(f"sqlmap exited {self.returncode}")
        if FINISHED not in self.output:
            errors.append("sqlmap did not finish")
        if self.report is None:
            errors.append("sqlmap wrote no JSON report")
        elif not self.report.get("success", False) or self.report.get("error"):
            errors.append(f"sqlmap's report has errors: {self.report.get('error')}")
        names = {match["name"] for match in NOT_INJECTABLE.finditer(self.output)}
        expected = self.target.parameter if self.target.location == "query" else "#1*"
        if expected not in names and not self.findings():
            errors.append(f"no verdict on parameter {expected!r} (verdicts: {sorted(names)})")
        errors += [
            line.strip()
            for line in self.output.splitlines()
            if PROBLEM_LINE.search(line) and not HARMLESS.search(line)
        ]
        return errors

    def summary(self) -> str:
        findings, errors = self.findings(), self.errors()
        verdict = "not injectable"
        if findings:
            verdict = f"{len(findings)} finding(s)"
        elif errors:
            verdict = f"{len(errors)} error(s)"
        return f"sqlmap {self.target.label} on {self.backend}: {verdict}, {self.elapsed:.0f} s"

    def problems(self) -> str | None:
        """Everything wrong with this target, with how to rerun sqlmap on it; None if clean."""
        lines = [*(f"  finding: {line}" for line in self.findings())]
        lines += [f"  error: {line}" for line in self.errors()]
        if not lines:
            return None
        tail = "\n".join(f"    {line}" for line in self.output.splitlines()[-15:])
        return (
            f"{self.summary()}\n" + "\n".join(lines) + f"\n  rerun: {shlex.join(self.command)}\n"
            f"  files: {self.workdir}\n  output's end:\n{tail}"
        )


def resolve(schema: Mapping[str, Any], document: Mapping[str, Any]) -> dict[str, Any]:
    """A parameter schema with its ``$ref`` followed and ``anyOf [X, null]`` reduced to X."""
    current: dict[str, Any] = dict(schema)
    while True:
        if "$ref" in current:
            node: Any = document
            for part in current["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            current = dict(node)
        elif "anyOf" in current:
            branches = [branch for branch in current["anyOf"] if branch.get("type") != "null"]
            current = dict(branches[0])
        else:
            return current


@dataclass(frozen=True)
class Values:
    """Real values for the parts of a request that are not under test."""

    base_url: str
    # Path parameter name -> value; ``per_operation`` overrides it for one operation (a
    # DELETE gets an object of its own, so the operations after it still find theirs).
    path: Mapping[str, str]
    per_operation: Mapping[str, Mapping[str, str]]
    # Listing path -> a ``next_cursor`` it answered.
    cursors: Mapping[str, str]
    # For a query parameter that takes a user's id.
    user_id: str

    def path_for(self, operation: str) -> dict[str, str]:
        return {**self.path, **self.per_operation.get(operation, {})}


def query_value(name: str, schema: Mapping[str, Any], path: str, values: Values) -> str:
    """A valid value of a query parameter: a real cursor, an id that exists, an enum member,
    the default, or something of the right type."""
    if name == "cursor":
        if path not in values.cursors:
            pytest.fail(f"{path}: no page cursor to start from; seed more rows")
        return values.cursors[path]
    if "enum" in schema:
        return str(schema["enum"][0])
    if schema.get("format") == "uuid":
        return values.user_id
    if schema.get("format") == "date-time":
        return SINCE
    if "default" in schema:
        value = schema["default"]
        return json.dumps(value) if isinstance(value, bool) else str(value)
    return {"integer": "1", "number": "1", "boolean": "false"}.get(schema.get("type", ""), "x")


def required_scopes(operation: Mapping[str, Any]) -> set[str]:
    return {
        scope
        for requirement in operation.get("security") or []
        for scopes in requirement.values()
        for scope in scopes
    }


def identity_for(operation: Mapping[str, Any], accounts: Mapping[str, Account]) -> Account:
    """The first of alice and the admin whose token has the scopes ``operation`` requires."""
    required = required_scopes(operation)
    for name in (USER, ADMIN):
        if required <= accounts[name].scope:
            return accounts[name]
    pytest.fail(f"no seeded account has the scopes {sorted(required)}")


def operations(document: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(label, path, operation)`` for every operation of the document."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield f"{method.upper()} {path}", path, operation


def targets(
    document: Mapping[str, Any], accounts: Mapping[str, Account], values: Values
) -> Iterator[Target]:
    """A target for every query and path parameter of every operation in ``document``; a
    parameter the harness has no real value for fails the test, so that a new route is
    never left out silently."""
    for label, path, operation in operations(document):
        parameters = operation.get("parameters") or []
        if not any(parameter["in"] in ("query", "path") for parameter in parameters):
            continue
        who = identity_for(operation, accounts)
        body = None
        if (operation.get("requestBody") or {}).get("required"):
            if label not in BODIES:
                pytest.fail(f"{label} needs a body: add a valid one to BODIES")
            body = BODIES[label]
        base = Target(label, "", "", who.username, "", label.split(" ", 1)[0], body)
        for parameter in parameters:
            if parameter["in"] == "path":
                yield _path_target(base, path, parameter["name"], values)
            elif parameter["in"] == "query":
                schema = resolve(parameter.get("schema", {}), document)
                yield _query_target(base, path, parameter["name"], schema, values)


def _path_target(base: Target, path: str, name: str, values: Values) -> Target:
    url = values.base_url + _filled(base.operation, path, values, marked=name)
    return replace(base, location="path", parameter=name, url=url)


def _query_target(
    base: Target, path: str, name: str, schema: Mapping[str, Any], values: Values
) -> Target:
    url = values.base_url + _filled(base.operation, path, values, marked=None)
    query = urlencode({name: query_value(name, schema, path, values)})
    return replace(base, location="query", parameter=name, url=f"{url}?{query}")


def _filled(operation: str, path: str, values: Values, marked: str | None) -> str:
    """``path`` with real values, sqlmap's ``*`` after the one named ``marked``."""
    known = values.path_for(operation)
    for name in re.findall(r"\{([^}]+)\}", path):
        if name not in known:
            pytest.fail(f"{operation}: no value for path parameter {name!r}; add one")
        marker = "*" if name == marked else ""
        path = path.replace("{" + name + "}", quote(known[name], safe="") + marker)
    return path


def command(target: Target, token: str, dbms: str, workdir: Path) -> list[str]:
    args = [str(SQLMAP), "-u", target.url, "--method", target.method, "--batch"]
    args += ["--answers", ANSWERS, "-H", f"Authorization: Bearer {token}"]
    if target.body is not None:
        args += ["--data", json.dumps(target.body), "-H", "Content-Type: application/json"]
    if target.location == "query":
        args += ["-p", target.parameter]
    if target.method == "DELETE":
        # Its first request deletes the object; from then on 404 is the answer to compare
        # with, not a reason for sqlmap to give up.
        args += ["--ignore-code", "404"]
    args += ["--dbms", dbms, "--level", str(LEVEL), "--risk", str(RISK)]
    # No query of bastion's selects more than a dozen columns. Level 5 tries UNIONs of up to
    # 100, which on an enum parameter (every payload a 422) ran into the time limit without
    # a verdict: GET /admin/audit?type on SQLite, 182 s.
    args += ["--union-cols", UNION_COLUMNS]
    args += ["--time-limit", str(TIME_LIMIT), "--timeout", "15", "--retries", "1"]
    args += ["--output-dir", str(workdir), "--report-json", str(workdir / "report.json")]
    args += ["--ignore-proxy", "--disable-coloring", "--flush-session"]
    return args


def run_sqlmap(target: Target, scan: ScanTarget, workdir: Path) -> Result:
    """sqlmap on one target; never raises for what sqlmap says, only reports it."""
    if not SQLMAP.exists():
        pytest.fail(f"{SQLMAP} is missing: it is a dev dependency, run `make .venv`")
    workdir.mkdir(parents=True, exist_ok=True)
    token = scan.accounts[target.identity].access_token
    argv = command(target, token, DBMS[scan.backend], workdir)
    started = time.monotonic()
    try:
        completed = subprocess.run(
            argv,
            cwd=workdir,
            # HOME in the tmp dir: sqlmap's per-user files stay there too.
            env=tool_environment(HOME=str(workdir)),
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )
        returncode, output = completed.returncode, completed.stdout + completed.stderr
    except subprocess.TimeoutExpired as exc:
        output = f"{decoded(exc.stdout)}{decoded(exc.stderr)}\n(ended after {exc.timeout} s)"
        returncode = -1
    elapsed = time.monotonic() - started
    (workdir / "output.txt").write_text(output, encoding="utf-8")
    report_file = workdir / "report.json"
    report = json.loads(report_file.read_text(encoding="utf-8")) if report_file.exists() else None
    # The token stays out of what a failure prints.
    shown = [part.replace(token, f"<{target.identity}'s access token>") for part in argv]
    return Result(target, scan.backend, shown, returncode, output, report, elapsed, workdir)
