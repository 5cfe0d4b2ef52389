"""A notebook (kastor://) through a head restart: the client port runs inside the head, so
while the head is down the notebook's calls wait; once a head is back on the same state, they
go on, and so do the actors."""

from __future__ import annotations

import kastor
import pytest
from gcs_cluster import TOKEN, GcsCluster
from kastor.runtime import launcher
from support import DEADLINE_S


class ClientPortCluster(GcsCluster):
    """A GcsCluster whose head also serves the client port (the same port after a restart)."""

    def __init__(self, tmp, redis):
        super().__init__(tmp, redis)
        self.client_port = launcher.free_port()

    def start_head(self) -> None:
        self.head = launcher.Child(
            "kastor.runtime.head",
            ["--port", str(self.port), "--cluster-id", self.cluster_id, "--redis-address", self.redis.address,
             "--client-port", str(self.client_port)],
            self.env, str(self.tmp / "logs" / "head.log"))
        self.head.wait_ready()


@pytest.fixture
def notebook(tmp_path, redis_server):
    c = ClientPortCluster(tmp_path, redis_server)
    c.start_head()
    c.add_node("n1")
    kastor.init(f"kastor://127.0.0.1:{c.client_port}", token=TOKEN)
    yield c
    kastor.shutdown()
    c.stop()


@kastor.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n


def test_notebook_calls_resume_after_the_head_restarts(notebook):
    detached = Counter.options(name="kept", lifetime="detached").remote()
    mine = Counter.remote()
    assert kastor.get([detached.add.remote(1), mine.add.remote(1)]) == [1, 1]

    notebook.kill_head()
    pending = [detached.add.remote(1), mine.add.remote(1)]  # made while the client port is gone
    notebook.start_head()

    assert kastor.get(pending, timeout=DEADLINE_S) == [2, 2]
    assert kastor.get(kastor.get_actor("kept").add.remote(1), timeout=DEADLINE_S) == 3
    assert kastor.get(mine.add.remote(1), timeout=DEADLINE_S) == 3
