"""The ``bastion`` command, run as a user runs it: a subprocess with BASTION_* variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.postgres import PostgresServer, free_port

BASTION = str(Path(sys.executable).parent / "bastion")


def run_bastion(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("BASTION_")}
    return subprocess.run(
        [BASTION, *args],
        cwd=cwd,
        env={**clean, **(env or {})},
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
    result = run_bastion("check", cwd=tmp_path, env={"BASTION_MAX_BODY_BYTES": "lots"})
    assert result.returncode == 2
    assert "max_body_bytes" in result.stderr
    assert "Traceback" not in result.stderr


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


async def test_migrate_and_serve_guard_on_postgresql(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    name = await postgres_server.create_database()
    env = {"BASTION_DATABASE_URL": postgres_server.url(name)}
    try:
        behind = run_bastion("serve", "--port", "1", cwd=tmp_path, env=env)
        assert behind.returncode == 1
        assert "bastion migrate" in behind.stderr
        migrated = run_bastion("migrate", cwd=tmp_path, env=env)
        assert migrated.returncode == 0, migrated.stderr
        assert "database at revision" in migrated.stdout
        assert not (tmp_path / ".bastion").exists()  # PostgreSQL needs no data dir file
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
