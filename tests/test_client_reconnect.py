"""A remote client whose connection drops (laptop sleep, port-forward restart) keeps its job,
refs and non-detached actors if it is back within the grace period, and loses them after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import kastor
import numpy as np
import pytest
from kastor.runtime import config, launcher
from support import DEADLINE_S, cli_head, wait_until
from tcp_proxy import TcpProxy

TOKEN = "reconnect-test-" + os.urandom(8).hex()
GRACE_S = 3.0


@pytest.fixture
def remote(tmp_path, monkeypatch):
    client_port = launcher.free_port()
    with cli_head(tmp_path, TOKEN, "--client-port", str(client_port)) as head:
        proxy = TcpProxy(("127.0.0.1", client_port))
        monkeypatch.setattr(config, "CLIENT_RECONNECT_GRACE_S", GRACE_S)
        kastor.init(f"kastor://127.0.0.1:{proxy.port}", token=TOKEN)
        yield {**head, "proxy": proxy}
        kastor.shutdown()
        proxy.close()


@kastor.remote
class Tally:
    def __init__(self):
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    def total(self, arr) -> int:
        return int(arr.sum())


def actor_states(remote) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "list", "actors", "--json", "--address",
                          remote["head"], "--token", TOKEN], capture_output=True, text=True, timeout=60, check=True)
    return {a["actor_id"]: a["state"] for a in json.loads(out.stdout)}


def outlast(seconds: float) -> None:
    """Lets a span of time pass: these tests check what does (not) happen within it."""
    threading.Event().wait(seconds)


def test_drop_within_the_grace_period_keeps_everything(remote):
    t = Tally.remote()
    arr = np.ones(1_000_000, dtype=np.int64)
    ref = kastor.put(arr)
    assert kastor.get(t.add.remote(1)) == 1
    remote["proxy"].cut()
    outlast(1.0)
    remote["proxy"].restore()
    outlast(GRACE_S + 1.0)  # past the grace period: the session must have been restored in time
    assert kastor.get(t.add.remote(1), timeout=DEADLINE_S) == 2, "the non-detached actor survived"
    assert kastor.get(t.total.remote(ref), timeout=DEADLINE_S) == arr.sum(), "refs stayed valid"
    assert actor_states(remote)[t._actor_id.hex()] == "ALIVE"


def test_drop_beyond_the_grace_period_releases_the_job(remote):
    t = Tally.remote()
    keep = Tally.options(name="keep", lifetime="detached").remote()
    kastor.get([t.add.remote(1), keep.add.remote(1)])
    remote["proxy"].cut()
    wait_until(lambda: actor_states(remote)[t._actor_id.hex()] == "DEAD",
               "the gone client's actor to be released", timeout=GRACE_S + DEADLINE_S)
    assert actor_states(remote)[keep._actor_id.hex()] == "ALIVE", "detached actors stay"
