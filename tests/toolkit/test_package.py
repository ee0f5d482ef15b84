"""The toolkit as a package others install: a wheel with its type information and data, and
a public surface that is exactly ``bastion.toolkit.__all__``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import bastion.toolkit

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_public_surface_is_exactly_all() -> None:
    exported = set(bastion.toolkit.__all__)
    for name in exported:
        assert getattr(bastion.toolkit, name) is not None, name
    public = {
        name for name in vars(bastion.toolkit)
        if not name.startswith("_") and name != "annotations"  # from __future__
    }
    assert public == exported, "public but not in __all__, or listed but missing"
    assert {
        "BastionSecurity", "JwksAuthenticator", "public", "authenticated", "require", "SafeHTML"
    } <= exported  # the contract's names


def test_the_wheel_carries_its_types_and_data_and_nothing_of_the_repository(
    tmp_path: Path,
) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
         str(REPO_ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = tmp_path.glob("bastion-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "bastion/py.typed",
        "bastion/toolkit/__init__.py",
        "bastion/console/static/app.js",
        "bastion/console/static/index.html",
        "bastion/apidocs/swagger-init.js",
        "bastion/migrations/env.py",
    ):
        assert expected in names, expected
    assert any(name.startswith("bastion/migrations/versions/") for name in names)
    assert any(name.startswith("bastion/security/data/") for name in names)
    assert not any(name.startswith(("tests/", "examples/", "bench/")) for name in names)
