"""The ``bastion`` command, run as a user runs it: a subprocess with BASTION_* variables."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.postgres import PostgresServer, free_port

BASTION = str(Path(sys.executable).parent / "bastion")


def run_bastion(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("BASTION_")}
    return subprocess.run(
        [BASTION, *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_check_passes_on_development_defaults(tmp_path: Path) -> None:
    result = run_bastion("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no insecure settings" in result.stdout


def test_check_deploy_fails_on_development_defaults(tmp_path: Path) -> None:
    result = run_bastion("check", "--deploy", cwd=tmp_path)
    assert result.returncode == 1
    assert "BASTION_ISSUER" in result.stdout


def test_check_fails_on_a_setting_insecure_everywhere(tmp_path: Path) -> None:
    result = run_bastion("check", cwd=tmp_path, env={"BASTION_CORS_ORIGINS": "*"})
    assert result.returncode == 1
    assert "BASTION_CORS_ORIGINS" in result.stdout


def test_production_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    result = run_bastion(
        "serve", "--port", "1", cwd=tmp_path,
        env={"BASTION_ENV": "production", "BASTION_JWT_ALGORITHM": "HS256",
             "BASTION_JWT_SECRET": "tooshort"},
    )
    assert result.returncode == 2
    assert "refusing to start in production" in result.stderr
    assert "BASTION_JWT_SECRET" in result.stderr
    assert "BASTION_ISSUER" in result.stderr
    assert "tooshort" not in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_configuration_is_reported_without_a_traceback(tmp_path: Path) -> None:
    result = run_bastion(
        "check", cwd=tmp_path,
        env={"BASTION_MAX_BODY_BYTES": "lots", "BASTION_COOKIE_IDLE_TTL": "-1"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "bastion: invalid configuration",
        "BASTION_MAX_BODY_BYTES: Input should be a valid integer, unable to parse string as an "
        "integer",
        "BASTION_COOKIE_IDLE_TTL: Input should be greater than or equal to 60",
    ]  # the variable to set, never the Python field alone, nor the value


def test_the_log_level_may_be_written_in_lower_case(tmp_path: Path) -> None:
    result = run_bastion("check", cwd=tmp_path, env={"BASTION_LOG_LEVEL": "warning"})
    assert result.returncode == 0, result.stderr


def test_misspelt_variables_are_warned_about_with_the_setting_meant(tmp_path: Path) -> None:
    """On stderr, before anything else (a refusal included: the misspelling may be its
    cause); the output proper is unchanged; values are never printed."""
    (tmp_path / ".env").write_text("BASTION_JWT_SECRT=dotenv-secret\n", encoding="utf-8")
    env = {
        "BASTION_DATABASE_URLL": "postgresql+asyncpg://u:env-secret@db/x",
        "BASTION_FAULTS": "reduced",  # the test suite's own switch: not warned about
    }
    warnings = [
        "bastion: warning: BASTION_DATABASE_URLL is not a setting and is ignored; "
        "did you mean BASTION_DATABASE_URL?",
        "bastion: warning: BASTION_JWT_SECRT (in .env) is not a setting and is ignored; "
        "did you mean BASTION_JWT_SECRET?",
    ]
    checked = run_bastion("check", cwd=tmp_path, env=env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == "no insecure settings found\n"
    assert checked.stderr.splitlines() == warnings
    refused = run_bastion("check", cwd=tmp_path, env={**env, "BASTION_LOG_LEVEL": "loud"})
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[:3] == [*warnings, "bastion: invalid configuration"]
    for output in (checked.stderr, refused.stderr):
        assert "secret" not in output.replace("SECRET", "")


@pytest.mark.parametrize(
    ("command", "nothing_done"),
    [
        (["create-admin", "--username", "root", "--email", "root@example.com"],
         "no account was created"),
        (["audit", "verify"], "nothing was verified"),
        (["keys", "rotate"], "no key was rotated"),
    ],
)
def test_a_command_in_the_wrong_directory_names_the_database_and_creates_none(
    tmp_path: Path, command: list[str], nothing_done: str
) -> None:
    """Run where the service's data dir is not: no empty database left behind, and the
    message says where it looked and what to set."""
    result = run_bastion(*command, cwd=tmp_path, stdin="a long enough passphrase\n")
    assert result.returncode == 1, result.stderr
    database = tmp_path / ".bastion" / "bastion.sqlite3"
    assert result.stderr.splitlines() == [
        f"bastion: there is no database at {database} (BASTION_DATA_DIR .bastion, from the "
        f"working directory {tmp_path}); {nothing_done}",
        "set BASTION_DATA_DIR to the service's data directory (or run from the service's "
        "working directory), or run `bastion migrate` first to start a new database there",
    ]
    assert not (tmp_path / ".bastion").exists()


def test_an_empty_database_file_is_named_and_left_as_it_was(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "bastion.sqlite3").touch(mode=0o600)
    result = run_bastion("audit", "verify", cwd=tmp_path, env={"BASTION_DATA_DIR": str(data_dir)})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"bastion: the SQLite database {data_dir / 'bastion.sqlite3'} has no bastion schema; "
        "nothing was verified",
        "run `bastion migrate` first, or set BASTION_DATA_DIR to the service's data directory",
    ]


def test_serve_on_a_sqlite_url_that_names_no_file_creates_none(tmp_path: Path) -> None:
    database = tmp_path / "elsewhere" / "bastion.sqlite3"
    result = run_bastion(
        "serve", "--port", "1", cwd=tmp_path,
        env={"BASTION_DATABASE_URL": f"sqlite+aiosqlite:///{database}"},
    )
    assert result.returncode == 1
    assert f"bastion: there is no database at {database}; not serving" in result.stderr
    assert "set BASTION_DATABASE_URL to the service's database" in result.stderr
    assert "Traceback" not in result.stderr
    assert not database.parent.exists()


def test_openapi_declares_the_password_flow(tmp_path: Path) -> None:
    result = run_bastion("openapi", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)
    flows = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flows["password"]["tokenUrl"] == "/auth/token"
    assert "/health/ready" in spec["paths"]
    assert not (tmp_path / ".bastion").exists()  # printing the spec stores nothing


def test_migrate_says_so_when_the_database_does_not_answer(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    result = run_bastion(
        "migrate", cwd=tmp_path,
        env={"BASTION_DATABASE_URL": url, "BASTION_DATABASE_TIMEOUT": "2"},
    )
    assert result.returncode == 1
    assert "does not answer" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("command", "nothing_done"),
    [(["serve", "--port", "1"], "not serving"), (["migrate"], "nothing was migrated"),
     (["audit", "verify"], "nothing was verified")],
)
def test_a_data_dir_that_cannot_be_used_is_one_line_not_a_traceback(
    tmp_path: Path, command: list[str], nothing_done: str
) -> None:
    """A read-only or immutable database file, a full disk, or (here, without root) a data
    dir whose path runs through a regular file: the operator gets the file and the reason."""
    (tmp_path / "file").touch()
    data_dir = tmp_path / "file" / "data"
    result = run_bastion(*command, cwd=tmp_path, env={"BASTION_DATA_DIR": str(data_dir)})
    assert result.returncode == 1, result.stderr
    assert f"bastion: cannot use {data_dir}: Not a directory; {nothing_done}" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_on_the_embedded_database(tmp_path: Path) -> None:
    result = run_bastion("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "database at revision" in result.stdout
    assert (tmp_path / ".bastion" / "bastion.sqlite3").exists()


def test_migrate_waits_for_a_write_lock_held_elsewhere_then_says_so(tmp_path: Path) -> None:
    """Another process (a server starting beside it) holds SQLite's write lock: migrate
    waits for it up to the timeout, then fails in one line; it was a traceback at once."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    with contextlib.closing(sqlite3.connect(data_dir / "bastion.sqlite3")) as holder:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("BEGIN IMMEDIATE")
        result = run_bastion(
            "migrate", cwd=tmp_path,
            env={"BASTION_DATA_DIR": str(data_dir), "BASTION_DATABASE_TIMEOUT": "1"},
        )
    assert result.returncode == 1, result.stderr
    assert result.stderr == "bastion: the database does not answer; nothing was migrated\n"


async def test_migrate_and_serve_guard_on_postgresql(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    name = await postgres_server.create_database()
    # The test cluster trusts every local connection: the password is there to be hidden.
    url = postgres_server.url(name).replace("postgres@", "postgres:pg-password@")
    env = {"BASTION_DATABASE_URL": url}
    shown = f"the database {url.replace('pg-password', '***')}"
    try:
        behind = run_bastion("serve", "--port", "1", cwd=tmp_path, env=env)
        assert behind.returncode == 1
        assert behind.stderr.splitlines() == [
            f"bastion: {shown} has no bastion schema; not serving",
            "run `bastion migrate` first, or set BASTION_DATABASE_URL to the service's database",
        ]
        admin = run_bastion(
            "create-admin", "--username", "root", "--email", "root@example.com",
            cwd=tmp_path, env=env, stdin="a long enough passphrase\n",
        )
        assert admin.returncode == 1
        assert f"bastion: {shown} has no bastion schema; no account was created" in admin.stderr
        migrated = run_bastion("migrate", cwd=tmp_path, env=env)
        assert migrated.returncode == 0, migrated.stderr
        assert "database at revision" in migrated.stdout
        # PostgreSQL needs no database file (the data dir holds only serve's lock)
        assert not (tmp_path / ".bastion" / "bastion.sqlite3").exists()
    finally:
        await postgres_server.drop_database(name)


@pytest.mark.parametrize("half", [["--ssl-certfile", "cert.pem"], ["--ssl-keyfile", "key.pem"]])
def test_serve_wants_both_tls_files(tmp_path: Path, half: list[str]) -> None:
    result = run_bastion("serve", "--port", "1", *half, cwd=tmp_path)
    assert result.returncode == 2
    assert "go together" in result.stderr


def test_several_workers_without_redis_are_refused(tmp_path: Path) -> None:
    result = run_bastion("serve", "--port", "1", "--workers", "2", cwd=tmp_path)
    assert result.returncode == 2
    assert "BASTION_REDIS_URL" in result.stderr
