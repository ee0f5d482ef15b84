"""The data directory's lock: one holder at a time, private, and gone with its process."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.storage.data_dir_lock import LOCK_FILE_NAME, DataDirInUse, lock_data_dir

HOLD = (
    "import sys, time; from pathlib import Path; "
    "from bastion.storage.data_dir_lock import lock_data_dir; "
    "lock = lock_data_dir(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)"
)


def test_a_second_holder_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    with lock_data_dir(data_dir) as lock:
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
        assert lock.path == data_dir / LOCK_FILE_NAME
        # flock belongs to the open file: a second open in the same process is refused too.
        with pytest.raises(DataDirInUse) as in_use:
            lock_data_dir(data_dir)
        assert in_use.value.holder == os.getpid()
        assert in_use.value.data_dir == data_dir.resolve()
    with lock_data_dir(data_dir):
        pass


def test_an_existing_lock_file_is_made_private(tmp_path: Path) -> None:
    tmp_path.joinpath(LOCK_FILE_NAME).write_text("garbage, not a pid")
    tmp_path.joinpath(LOCK_FILE_NAME).chmod(0o644)
    with lock_data_dir(tmp_path) as lock:
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
        assert lock.path.read_text() == f"{os.getpid()}\n"


def test_the_lock_goes_with_a_killed_process(tmp_path: Path) -> None:
    """No stale lock after kill -9: the kernel drops a flock with its last descriptor."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "locked\n"
            with pytest.raises(DataDirInUse) as in_use:
                lock_data_dir(tmp_path)
            assert in_use.value.holder == holder.pid
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
    with lock_data_dir(tmp_path):
        pass
