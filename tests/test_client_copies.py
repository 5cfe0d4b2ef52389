"""Where a kastor:// client keeps its local copies (runtime/client_copies.py): in memory when
/dev/shm is a real one, never more than half of it, and the folders of dead clients are swept."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

from kastor.runtime import client_copies


def test_the_copies_go_to_a_real_dev_shm_or_where_the_setting_says(monkeypatch, tmp_path):
    monkeypatch.delenv("KASTOR_CLIENT_COPIES_DIR", raising=False)
    st = os.statvfs(client_copies.SHM)
    big_enough = st.f_blocks * st.f_frsize >= client_copies.MIN_SHM_BYTES
    assert (client_copies.root() == client_copies.SHM) == big_enough
    monkeypatch.setenv("KASTOR_CLIENT_COPIES_DIR", str(tmp_path))
    assert client_copies.root() == str(tmp_path)


def test_a_copy_in_memory_leaves_half_of_it_free(tmp_path):
    st = os.statvfs(client_copies.SHM)
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    assert client_copies.has_room(client_copies.SHM, 1)
    assert not client_copies.has_room(client_copies.SHM, free - total // 2 + (1 << 20))
    assert client_copies.has_room(str(tmp_path), free * 2)  # a disk folder: the write itself says if it is full


def test_the_folders_of_dead_clients_are_deleted_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    left = tmp_path / f"{client_copies.PREFIX}{dead_pid}-abc"
    left.mkdir()
    (left / ("0" * 40)).write_bytes(b"x")
    live = tmp_path / f"{client_copies.PREFIX}{os.getppid()}-def"  # a live client's: it holds its lock
    live.mkdir()
    held = os.open(live / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_SH)
    reused = tmp_path / f"{client_copies.PREFIX}{os.getppid()}-ghi"  # its PID runs again, as another process
    reused.mkdir()
    other = tmp_path / "someone-else"
    other.mkdir()
    mine = client_copies.make_dir(str(tmp_path))
    assert os.path.basename(mine).startswith(f"{client_copies.PREFIX}{os.getpid()}-")
    assert not left.exists()
    assert not reused.exists(), "a folder whose PID was reused was kept: liveness is the lock, not the PID"
    assert live.exists() and other.exists()
    os.close(held)
    client_copies.remove_dir(mine)
