"""Placement groups from a driver outside the cluster network, through the head's client port (kastor://)."""

from __future__ import annotations

import os

import kastor
import pytest
from kastor.exceptions import ActorDiedError
from kastor.util import placement_group, placement_group_table, remove_placement_group
from kastor.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from kastor.util.state import list_nodes
from support import DEADLINE_S, cli_head, wait_until

TOKEN = "pg-client-test-" + os.urandom(8).hex()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from kastor.runtime import launcher

    client_port = launcher.free_port()
    with cli_head(tmp_path_factory.mktemp("sessions"), TOKEN, "--client-port", str(client_port)):
        kastor.init(f"kastor://127.0.0.1:{client_port}", token=TOKEN, namespace="notebook")
        yield
        kastor.shutdown()


@kastor.remote(num_cpus=1)
class Counter:
    def __init__(self):
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n


@kastor.remote(num_cpus=1)
def node_id() -> str:
    return kastor.get_runtime_context().get_node_id()


def test_groups_through_the_client_port(client):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK", name="from-the-notebook")
    assert kastor.get(pg.ready(), timeout=DEADLINE_S) == pg
    assert pg.wait(DEADLINE_S)
    row = placement_group_table(pg)
    assert row["state"] == "CREATED" and row["name"] == "from-the-notebook"
    node = row["bundles_to_node_id"][0]
    counter = Counter.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
    assert kastor.get([counter.add.remote() for _ in range(3)], timeout=DEADLINE_S) == [1, 2, 3]
    assert kastor.get(node_id.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 1)).remote(),
                      timeout=DEADLINE_S) == node
    # The node's two CPUs are the group's now: a task outside it has to wait for the removal.
    outside = node_id.remote()
    assert kastor.wait([outside], timeout=1)[0] == []
    remove_placement_group(pg)
    with pytest.raises(ActorDiedError, match="placement group"):
        kastor.get(counter.add.remote(), timeout=DEADLINE_S)
    assert kastor.get(outside, timeout=DEADLINE_S) == node
    wait_until(lambda: all(n["available"].get("CPU") == 2 for n in list_nodes() if n["alive"]),
               "the group's CPUs back", timeout=DEADLINE_S)
