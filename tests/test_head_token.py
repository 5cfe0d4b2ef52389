"""A head keeps its cluster's token across restarts.

A head restarted on its Redis state with another token would lock out the cluster's nodes
and, once it declared them dead, mark every detached actor DEAD for good. The store keeps a
salted hash of the token (never the token); a head given another one refuses to start and
says which flag passes the right one. A token mismatch that does happen (say, a head without
a store on a node's head address) is logged as one on both sides.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kastor
import pytest
import redis
from gcs_cluster import TOKEN, GcsCluster, driven_cluster
from kastor.runtime import launcher
from kastor.util.state import list_actors
from support import wait_until


@pytest.fixture
def cluster(tmp_path, redis_server, monkeypatch):
    with driven_cluster(tmp_path, redis_server, monkeypatch) as c:
        yield c


@kastor.remote
class Box:
    def __init__(self):
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n


def _head_with_token(c: GcsCluster, token: str, name: str) -> launcher.Child:
    env = dict(c.env, KASTOR_TOKEN=token)
    return launcher.Child("kastor.runtime.head", ["--port", str(c.port), "--cluster-id", c.cluster_id,
                                                  "--redis-address", c.redis.address],
                          env, str(c.tmp / "logs" / f"{name}.log"))


def test_head_restarted_with_another_token_refuses_and_detached_actors_survive(cluster):
    box = Box.options(name="box", lifetime="detached").remote()
    assert kastor.get(box.add.remote(1)) == 1
    cluster.kill_head()

    wrong = _head_with_token(cluster, "not-the-cluster-token", "wrong-head")
    with pytest.raises(RuntimeError) as info:
        wrong.wait_ready()
    message = str(info.value)
    assert "exited" in message and "different token" in message, message
    assert "--token-file" in message and "KASTOR_TOKEN_FILE" in message, message

    cluster.start_head()  # the cluster's own token: everything is where it was
    assert kastor.get(kastor.get_actor("box").add.remote(1), timeout=30) == 2
    [row] = list_actors(filters=[("name", "=", "box")])
    assert (row["state"], row["restarts"]) == ("ALIVE", 0)


def test_redis_keeps_a_fingerprint_of_the_token_not_the_token(cluster, redis_server):
    client = redis.Redis(port=redis_server.port)
    try:
        keys = list(client.scan_iter("kastor:*"))
        stored = b"".join(k + b"".join(client.hgetall(k).keys()) + b"".join(client.hgetall(k).values())
                          for k in keys)
        fingerprint = client.hget(f"kastor:{cluster.cluster_id}:meta", "token_fingerprint")
    finally:
        client.close()
    assert fingerprint and fingerprint.startswith(b"pbkdf2-sha256$")
    assert TOKEN.encode() not in stored


def test_cli_head_without_a_token_on_a_stored_cluster_names_the_flag(cluster, tmp_path):
    cluster.kill_head()
    env = {k: v for k, v in cluster.env.items() if k not in ("KASTOR_TOKEN", "KASTOR_TOKEN_FILE")}
    out = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--no-node",
                          "--port", str(cluster.port), "--client-port", "-1", "--redis-address",
                          cluster.redis.address, "--cluster-id", cluster.cluster_id],
                         env=env, capture_output=True, text=True, timeout=120)
    if out.returncode == 0:  # it must not start; if it did, do not leave it running
        subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "stop"], env=env, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "different token" in out.stderr and "--token-file" in out.stderr, out.stderr
    assert "no token was given" in out.stderr, out.stderr


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_a_token_mismatch_is_logged_on_both_sides(tmp_path):
    """A node whose head is replaced by one with another token (no store to refuse it)."""
    port = launcher.free_port()
    env = dict(os.environ, KASTOR_SESSION_ROOT=str(tmp_path / "sessions"))
    env.pop("KASTOR_ADDRESS", None)
    first = launcher.Child("kastor.runtime.head", ["--port", str(port), "--token", "token-one"], env,
                           str(tmp_path / "head1.log"))
    first.wait_ready()
    node = launcher.Child("kastor.runtime.node_agent", ["--address", f"127.0.0.1:{port}", "--token", "token-one",
                                                         "--session-dir", str(tmp_path)], env,
                          str(tmp_path / "node.log"))
    second = None
    try:
        node.wait_ready()
        first.stop()
        second = launcher.Child("kastor.runtime.head", ["--port", str(port), "--token", "token-two"], env,
                                str(tmp_path / "head2.log"))
        second.wait_ready()
        wait_until(lambda: "rejects this node's cluster token" in _log(tmp_path / "node.log"),
                   "the node to log that the head rejects its token")
        wait_until(lambda: "a wrong cluster token" in _log(tmp_path / "head2.log"),
                   "the new head to log the node's wrong token")
        assert "Heartbeat" in _log(tmp_path / "head2.log")
    finally:
        node.stop()
        first.stop()
        if second is not None:
            second.stop()


def test_cli_head_that_generates_a_token_for_redis_says_to_keep_it(tmp_path, redis_server):
    env = dict(os.environ, KASTOR_SESSION_ROOT=str(tmp_path / "sessions"))
    for name in ("KASTOR_TOKEN", "KASTOR_TOKEN_FILE", "KASTOR_ADDRESS"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--no-node", "--port",
                          str(launcher.free_port()), "--client-port", "-1", "--redis-address", redis_server.address,
                          "--cluster-id", "fresh"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        assert "keep it:" in out.stdout and "--token-file" in out.stdout, out.stdout
    finally:
        subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "stop"], env=env, timeout=120)
