"""Labels end to end from outside the cluster network: `kastor start --head` labels its node from
KASTOR_NODE_LABELS, and a driver on the client port (kastor://) places work by label_selector."""

from __future__ import annotations

import os
import subprocess
import sys

import kastor
import pytest
from kastor.operator.head_client import HeadClient
from support import DEADLINE_S, cli_head, wait_until

TOKEN = "labels-client-test-" + os.urandom(8).hex()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from kastor.runtime import launcher

    client_port = launcher.free_port()
    with cli_head(tmp_path_factory.mktemp("sessions"), TOKEN, "--client-port", str(client_port),
                  KASTOR_NODE_LABELS="zone=notebook,tier=gold") as head:
        kastor.init(f"kastor://127.0.0.1:{client_port}", token=TOKEN)
        yield head
        kastor.shutdown()


@kastor.remote
def labels_here() -> dict[str, str]:
    return kastor.get_runtime_context().get_node_labels()


@kastor.remote
class Labelled:
    def labels(self) -> dict[str, str]:
        return kastor.get_runtime_context().get_node_labels()


def test_label_selected_work_through_the_client_port(client):
    (node,) = kastor.nodes()
    assert node["Labels"] == {"zone": "notebook", "tier": "gold", "kastor.io/node-id": node["NodeID"]}
    selector = {"zone": "notebook", "tier": "in(gold,silver)"}
    assert kastor.get(labels_here.options(label_selector=selector).remote(), timeout=DEADLINE_S) == node["Labels"]
    actor = Labelled.options(label_selector=selector).remote()
    assert kastor.get(actor.labels.remote(), timeout=DEADLINE_S) == node["Labels"]
    elsewhere = labels_here.options(label_selector={"zone": "!notebook"}).remote()
    heads = HeadClient()
    try:  # no node matches: it waits, in the demand an autoscaler reads
        wait_until(lambda: any([dict(s.match) for s in d.labels] == [{"zone": "!notebook"}]
                               for d in heads.cluster_demand(client["head"], TOKEN).pending), "the task in the demand")
    finally:
        heads.close()
    status = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "status", "--address", client["head"]],
                            env=client["env"], capture_output=True, text=True, timeout=DEADLINE_S, check=True).stdout
    assert "{CPU: 1} on nodes labelled {'zone': '!notebook'}: tasks of job" in status, status
    assert kastor.wait([elsewhere], timeout=0)[0] == []
    kastor.cancel(elsewhere)
