"""The keys for secrets at rest: the setting, or a key file generated once, privately, even
when several processes start together on a fresh data dir."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from structlog.testing import capture_logs

from bastion.security.encryption import EncryptionKeys, new_key_text
from bastion.storage.encryption_key import ENCRYPTION_KEY_FILE_NAME, load_encryption_keys
from tests.conftest import TEST_ENCRYPTION_KEY, make_settings
from tests.test_check_deploy import PRODUCTION

REPOSITORY = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_key_is_generated_0600_in_a_0700_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with capture_logs() as logs:
        keys = load_encryption_keys(make_settings(data_dir))
    key_file = data_dir / ENCRYPTION_KEY_FILE_NAME
    assert mode(data_dir) == 0o700
    assert mode(key_file) == 0o600
    key_text = key_file.read_text().strip()
    assert EncryptionKeys.parse(key_text).current_key_id == keys.current_key_id
    assert sorted(p.name for p in data_dir.iterdir()) == [ENCRYPTION_KEY_FILE_NAME]
    generated = [line for line in logs if line["event"] == "encryption_key_generated"]
    assert generated == [
        {"event": "encryption_key_generated", "path": str(key_file), "log_level": "info",
         "logger_name": "bastion.storage"}
    ]
    assert key_text not in repr(logs)


def test_the_generated_key_is_reused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    first = load_encryption_keys(settings)
    sealed = first.encrypt("a secret", context="totp:1")
    with capture_logs() as logs:
        second = load_encryption_keys(settings)
    assert second.current_key_id == first.current_key_id
    assert second.decrypt(sealed, context="totp:1") == "a secret"
    assert not [line for line in logs if line["event"] == "encryption_key_generated"]


def test_a_key_file_others_could_read_is_narrowed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    first = load_encryption_keys(settings)
    key_file = tmp_path / "data" / ENCRYPTION_KEY_FILE_NAME
    key_file.chmod(0o644)
    assert load_encryption_keys(settings).current_key_id == first.current_key_id
    assert mode(key_file) == 0o600


def test_concurrent_threads_generate_one_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every thread has written its own candidate before any links it: one wins, the
    others read the winner's key."""
    settings = make_settings(tmp_path / "data")
    workers = 8
    all_written = threading.Barrier(workers, timeout=30)
    real_link = os.link

    def link_together(source: str | Path, target: str | Path) -> None:
        all_written.wait()
        real_link(source, target)

    monkeypatch.setattr(os, "link", link_together)
    with capture_logs() as logs, ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(load_encryption_keys, settings) for _ in range(workers)]
        key_ids = {future.result().current_key_id for future in futures}
    assert len(key_ids) == 1
    assert len([line for line in logs if line["event"] == "encryption_key_generated"]) == 1
    data_dir = tmp_path / "data"
    assert sorted(p.name for p in data_dir.iterdir()) == [ENCRYPTION_KEY_FILE_NAME]


PROCESS_SCRIPT = """
import sys, time
from pathlib import Path
from bastion.config import Settings
from bastion.storage.encryption_key import load_encryption_keys
settings = Settings(_env_file=None, data_dir=Path(sys.argv[1]))
while time.time() < float(sys.argv[2]):
    pass
print(load_encryption_keys(settings).current_key_id)
"""


def test_concurrent_processes_generate_one_key(tmp_path: Path) -> None:
    """Workers of a server starting together on a fresh data dir, released at one instant."""
    data_dir = tmp_path / "data"
    env = {key: value for key, value in os.environ.items() if not key.startswith("BASTION_")}
    start = time.time() + 3
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS_SCRIPT, str(data_dir), str(start)],
            cwd=REPOSITORY, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(6)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    key_ids = {stdout.strip().splitlines()[-1] for stdout, _ in outputs}
    assert len(key_ids) == 1
    assert sum(stdout.count("encryption_key_generated") for stdout, _ in outputs) == 1
    assert key_ids == {load_encryption_keys(make_settings(data_dir)).current_key_id}
    assert sorted(p.name for p in data_dir.iterdir()) == [ENCRYPTION_KEY_FILE_NAME]
    assert mode(data_dir / ENCRYPTION_KEY_FILE_NAME) == 0o600


def test_the_setting_wins_over_the_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    from_file = load_encryption_keys(make_settings(data_dir))
    keys = load_encryption_keys(make_settings(data_dir, encryption_key=TEST_ENCRYPTION_KEY))
    assert keys.current_key_id == EncryptionKeys.parse(TEST_ENCRYPTION_KEY).current_key_id
    assert keys.current_key_id != from_file.current_key_id


def test_the_setting_needs_no_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    load_encryption_keys(make_settings(data_dir, encryption_key=TEST_ENCRYPTION_KEY))
    assert not data_dir.exists()


def test_a_rotation_list_is_read_from_the_setting(tmp_path: Path) -> None:
    new = new_key_text()
    keys = load_encryption_keys(
        make_settings(tmp_path, encryption_key=f"{new}, {TEST_ENCRYPTION_KEY}")
    )
    old_keys = EncryptionKeys.parse(TEST_ENCRYPTION_KEY)
    assert keys.current_key_id == EncryptionKeys.parse(new).current_key_id
    assert keys.decrypt(old_keys.encrypt("x", context="c"), context="c") == "x"


@pytest.mark.parametrize("bad", ["not a key", "c2hvcnQ", f"{TEST_ENCRYPTION_KEY},oops!", ","])
def test_a_bad_setting_names_the_variable_not_the_value(tmp_path: Path, bad: str) -> None:
    """The settings refuse it at start; load_encryption_keys refuses it too (settings built
    around the validation), naming the variable and echoing no part of the value."""
    with pytest.raises(ValidationError) as invalid:
        make_settings(tmp_path / "data", encryption_key=bad)
    settings = make_settings(tmp_path / "data").model_copy(
        update={"encryption_key": SecretStr(bad)}
    )
    with pytest.raises(ValueError, match="BASTION_ENCRYPTION_KEY") as refused:
        load_encryption_keys(settings)
    for message in (str(refused.value), str(invalid.value)):
        for part in bad.split(","):
            if part.strip() and part != TEST_ENCRYPTION_KEY:
                assert part.strip() not in message
    assert not (tmp_path / "data").exists()


def test_production_settings_never_generate_a_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    production = make_settings(data_dir, **PRODUCTION)
    assert production.is_production
    keys = load_encryption_keys(production)
    assert keys.current_key_id == EncryptionKeys.parse(TEST_ENCRYPTION_KEY).current_key_id
    # Settings built around the validation (as a test or a bug might): still no key file.
    unset = production.model_copy(update={"encryption_key": None})
    with pytest.raises(ValueError, match="BASTION_ENCRYPTION_KEY must be set in production"):
        load_encryption_keys(unset)
    assert not data_dir.exists()


@pytest.mark.parametrize(
    "content", [b"", b"garbage\n", b"\xff\xfe\x00", TEST_ENCRYPTION_KEY[:-4].encode()]
)
def test_a_corrupt_key_file_is_a_clear_error_naming_it(tmp_path: Path, content: bytes) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    key_file = data_dir / ENCRYPTION_KEY_FILE_NAME
    key_file.write_bytes(content)
    key_file.chmod(0o600)
    with pytest.raises(ValueError, match="corrupt") as refused:
        load_encryption_keys(make_settings(data_dir))
    assert str(key_file) in str(refused.value)
    if content.strip():
        assert content.decode("latin-1").strip() not in str(refused.value)
    assert key_file.read_bytes() == content  # never replaced: values may be under it
