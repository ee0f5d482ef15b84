"""``bastion create-admin``, run as an operator runs it: a subprocess, the password piped.

The account is then used through an in-process app over the same database (SQLite file or
PostgreSQL), as the server would after the command.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
from fastapi import FastAPI

from bastion.audit.events import AuditEventType
from bastion.config import Settings
from tests.admin import events
from tests.identity.helpers import bearer, login, register
from tests.test_cli import BASTION

PASSWORD = "an operator's long passphrase 2026"


def environment(settings: Settings) -> dict[str, str]:
    env = {"BASTION_DATA_DIR": str(settings.data_dir)}
    if settings.database_url is not None:
        env["BASTION_DATABASE_URL"] = settings.database_url.get_secret_value()
    return env


def create_admin(
    *args: str, cwd: Path, env: dict[str, str], stdin: str
) -> subprocess.CompletedProcess[str]:
    """``run_bastion`` with a piped stdin (it has no ``input``)."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("BASTION_")}
    return subprocess.run(
        [BASTION, "create-admin", *args],
        cwd=cwd,
        env={**clean, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_creates_an_admin_who_can_log_in_and_administer(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    result = create_admin(
        "--username", "Root", "--email", "Root@Example.com",
        cwd=tmp_path, env=environment(settings), stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert "admin root created" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr

    tokens = await login(client, "root", PASSWORD)
    assert {"users:read", "users:write", "audit:read"} <= set(tokens["scope"].split())
    response = await client.get("/admin/users", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200, response.text
    [root] = response.json()["items"]
    assert (root["username"], root["email"], root["roles"]) == (
        "root", "root@example.com", ["admin", "user"],
    )

    [registration] = await events(app, AuditEventType.REGISTRATION)
    [role_change] = await events(app, AuditEventType.ROLE_CHANGE)
    for event in (registration, role_change):
        assert event.actor_id is None
        assert event.subject_id == root["id"]
        assert event.details["source"] == "cli"
    assert role_change.details["after"] == "admin user"


async def test_an_existing_username_is_refused(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    await register(client, "taken")
    result = create_admin(
        "--username", "Taken", "--email", "other@example.com",
        cwd=tmp_path, env=environment(settings), stdin=PASSWORD,
    )
    assert result.returncode == 1, result.stderr
    assert "exists already" in result.stderr
    assert "Traceback" not in result.stderr
    # The account was not touched: it is still no admin.
    tokens = await login(client, "taken")
    assert "users:read" not in tokens["scope"].split()


def test_a_weak_password_is_refused_without_echoing_it(tmp_path: Path) -> None:
    password = "rootroot and more words"  # long enough, but holds the username
    result = create_admin(
        "--username", "rootroot", "--email", "ops@example.com",
        cwd=tmp_path, env={"BASTION_DATA_DIR": str(tmp_path / "data")}, stdin=password + "\n",
    )
    assert result.returncode == 2, result.stderr
    assert "must not contain the username" in result.stderr
    assert password not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # refused before touching the database


def test_an_unmigrated_database_is_not_migrated(tmp_path: Path) -> None:
    result = create_admin(
        "--username", "root", "--email", "root@example.com",
        cwd=tmp_path, env={"BASTION_DATA_DIR": str(tmp_path / "data")}, stdin=PASSWORD,
    )
    assert result.returncode == 1
    assert "run `bastion migrate` first" in result.stderr
