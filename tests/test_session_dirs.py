"""Session folders do not pile up: starting a session prunes dead ones beyond the newest few,
and never touches a live one (held by a lock its processes inherit). `kastor start` prints
where the client port and the dashboard ended up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from kastor.runtime import launcher

MAKE_SESSION = "from kastor.runtime import launcher; print(launcher.new_session_dir('t'), flush=True)"


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, KASTOR_SESSION_ROOT=str(root), **extra)
    env.pop("KASTOR_ADDRESS", None)
    return env


def _new_session(root: Path, keep: int = 5) -> str:
    out = subprocess.run([sys.executable, "-c", MAKE_SESSION], env=_env(root, KASTOR_SESSIONS_KEPT=str(keep)),
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def _sessions(root: Path) -> set[str]:
    return {str(p) for p in root.glob("session_*")}


def test_dead_sessions_beyond_the_newest_few_are_pruned_live_ones_kept(tmp_path):
    old = [_new_session(tmp_path) for _ in range(3)]
    holder = subprocess.Popen([sys.executable, "-c", MAKE_SESSION + "; import sys; sys.stdin.read()"],
                              env=_env(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        live = holder.stdout.readline().strip()
        newer = [_new_session(tmp_path) for _ in range(6)]
        assert live in _sessions(tmp_path), "a live session is never pruned, however old"
        assert _sessions(tmp_path) == {live, *newer}, "only the newest 5 dead ones (and the new one) stay"
        assert not any(p in _sessions(tmp_path) for p in old)
    finally:
        holder.stdin.close()
        holder.wait(30)
    last = _new_session(tmp_path)
    assert live not in _sessions(tmp_path), "once its process is gone, an old session goes too"
    assert last in _sessions(tmp_path) and len(_sessions(tmp_path)) == 6, "the new one and 5 dead ones"


def test_a_detached_cluster_keeps_its_session_and_start_prints_its_ports(tmp_path):
    env = _env(tmp_path, KASTOR_TOKEN="sessions-" + os.urandom(6).hex())
    port = launcher.free_port()
    out = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--no-node", "--port",
                          str(port), "--client-port", "0", "--dashboard-port", "0"],
                         env=env, capture_output=True, text=True, timeout=120)
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        assert re.search(r"dashboard:\s+http://127\.0\.0\.1:[1-9]\d*/metrics", out.stdout), out.stdout
        assert re.search(r"kastor\.init\('kastor://127\.0\.0\.1:[1-9]\d*'\)", out.stdout), out.stdout
        [session] = _sessions(tmp_path)
        _new_session(tmp_path, keep=0)  # prunes every dead session: the cluster's is live (its head holds it)
        assert session in _sessions(tmp_path) and Path(session, "token").exists()
    finally:
        subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "stop"], env=env, timeout=120)
    _new_session(tmp_path, keep=0)
    assert session not in _sessions(tmp_path), "a stopped cluster's session is dead"
