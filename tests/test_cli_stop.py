"""`kastor stop` ends only what the user started here with `kastor start`, and only while a
recorded PID is still that process: PIDs are reused, and records outlive dead clusters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kastor.runtime import launcher
from support import process_gone, wait_until

TOKEN = "stop-test-" + os.urandom(8).hex()


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ, KASTOR_SESSION_ROOT=str(root), KASTOR_TOKEN=TOKEN)
    env.pop("KASTOR_ADDRESS", None)
    return env


def _kastor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kastor.runtime.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "records").glob("*.json"))]


def _pids(record: dict) -> list[int]:
    return [p["pid"] for p in record["procs"]]


@pytest.fixture
def root(tmp_path):
    """A session root; whatever a test leaves running there is stopped afterwards."""
    yield tmp_path
    _kastor(_env(tmp_path), "stop")


def _start_head(root: Path) -> str:
    port = launcher.free_port()
    out = _kastor(_env(root), "start", "--head", "--port", str(port), "--num-cpus", "1", "--client-port", "-1")
    assert out.returncode == 0, out.stdout + out.stderr
    return f"127.0.0.1:{port}"


def test_stop_ends_the_cluster_and_says_what_it_stopped(root):
    address = _start_head(root)
    [record] = _records(root)
    out = _kastor(_env(root), "stop")
    assert out.returncode == 0, out.stderr
    assert f"stopped head of cluster {address}" in out.stdout, out.stdout
    for pid in _pids(record):
        wait_until(lambda pid=pid: process_gone(pid), f"pid {pid} to exit")
    assert _records(root) == []


def test_stop_address_ends_only_that_cluster(root):
    first, second = _start_head(root), _start_head(root)
    out = _kastor(_env(root), "stop", "--address", first)
    assert out.returncode == 0 and first in out.stdout and second not in out.stdout, out.stdout
    [left] = _records(root)
    assert left["address"] == second
    assert not any(process_gone(pid) for pid in _pids(left)), "the other cluster keeps running"
    out = _kastor(_env(root), "stop", "--address", first)
    assert out.returncode == 1 and "no running cluster process at" in out.stdout, out.stdout


def test_a_reused_pid_is_left_alone_and_the_stale_record_dropped(root):
    """The record's head died; its PID now belongs to an unrelated process."""
    bystander = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        records = root / "records"
        records.mkdir(parents=True)
        stale = {"kind": "head", "address": "127.0.0.1:1", "session_dir": str(root / "session_old"),
                 "procs": [{"pid": bystander.pid, "module": "kastor.runtime.head", "start_time": 1}],
                 "pids": [bystander.pid]}
        (records / "session_old.json").write_text(json.dumps(stale))
        legacy = {"kind": "head", "address": "127.0.0.1:2", "pids": [bystander.pid]}  # an older version's record
        (records / "session_legacy.json").write_text(json.dumps(legacy))
        out = _kastor(_env(root), "stop")
        assert out.returncode == 0, out.stderr
        assert "no running cluster process" in out.stdout, out.stdout
        assert bystander.poll() is None, "kastor stop signalled a process it did not start"
        assert _records(root) == [], "records of clusters that are gone are dropped"
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to hand a record to another user")
def test_another_users_cluster_is_not_stopped(root):
    address = _start_head(root)
    [path] = (root / "records").glob("*.json")
    record = json.loads(path.read_text())
    os.chown(path, 12345, -1)
    try:
        out = _kastor(_env(root), "stop")
        assert address not in out.stdout, out.stdout
        assert not any(process_gone(pid) for pid in _pids(record))
    finally:
        os.chown(path, 0, -1)
