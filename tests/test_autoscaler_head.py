"""The head's autoscaling face on a real multi-process cluster: the demand that does not fit,
request_resources(), node idleness, and drains that refuse busy nodes (tests/k8s/
test_autoscaling_plans.py has the operator's decision, tests/k8s/test_real_autoscaling.py the
whole loop on the real control plane)."""

import grpc
import kastor
import pytest
from gcs_cluster import TOKEN, own_redis_cluster
from kastor.autoscaler import request_resources
from kastor.autoscaler.sdk import request_resources as sdk_request_resources
from kastor.operator.head_client import HeadClient
from kastor.runtime import auth
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.util.placement_group import placement_group, remove_placement_group
from support import wait_until

DEADLINE_S = 60


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with own_redis_cluster(tmp_path_factory.mktemp("autoscaler"), {"n1"}) as c:
        c.add_node("special", num_cpus=1, resources={"special": 1})
        yield c


@pytest.fixture(scope="module")
def head():
    client = HeadClient()
    yield client
    client.close()


def demand(cluster, head):
    return head.cluster_demand(cluster.address, TOKEN)


def shapes(entries, kind: str) -> dict[tuple, int]:
    return {tuple(sorted(e.shape.items())): e.count for e in entries if e.kind == kind}


def node(cluster, head, node_id: str):
    return next((n for n in demand(cluster, head).nodes if n.node_id == node_id), None)


@kastor.remote
class Holder:
    def ping(self) -> str:
        return "pong"


@kastor.remote
def needs_tpu() -> int:
    return 1


def test_pending_actors_tasks_and_groups_are_reported_with_their_shapes(cluster, head):
    gpu_actor = Holder.options(num_gpus=1).remote()  # no node has a GPU
    task = needs_tpu.options(resources={"TPU": 2}).remote()
    group = placement_group([{"CPU": 1, "bigmem": 4}], strategy="STRICT_SPREAD")
    try:
        wait_until(lambda: any(dict(s).get("GPU") == 1.0 for s in shapes(demand(cluster, head).pending, "actor")),
                   "the GPU actor reported as pending demand", DEADLINE_S)
        wait_until(lambda: any(dict(s).get("TPU") == 2.0 for s in shapes(demand(cluster, head).pending, "task")),
                   "the TPU task reported as pending demand", DEADLINE_S)
        groups = demand(cluster, head).placement_groups
        assert [(g.strategy, [dict(b.resources) for b in g.bundles]) for g in groups] == \
            [("STRICT_SPREAD", [{"CPU": 1.0, "bigmem": 4.0}])]
    finally:
        kastor.kill(gpu_actor)
        kastor.cancel(task, force=True)
        remove_placement_group(group)
    wait_until(lambda: not shapes(demand(cluster, head).pending, "actor") and
               not demand(cluster, head).placement_groups, "the demand withdrawn", DEADLINE_S)


def test_request_resources_is_standing_demand_that_the_next_call_replaces(cluster, head):
    request_resources(num_cpus=3, bundles=[{"GPU": 1}])
    assert shapes(demand(cluster, head).requested, "request") == {(("CPU", 1.0),): 3, (("GPU", 1.0),): 1}
    sdk_request_resources(bundles=[{"CPU": 2}])
    assert shapes(demand(cluster, head).requested, "request") == {(("CPU", 2.0),): 1}
    request_resources()
    assert not demand(cluster, head).requested
    with pytest.raises(TypeError, match="bundles\\[0\\] must map resource names to amounts >= 0"):
        request_resources(bundles=[{"CPU": -1}])


def test_an_idle_node_reports_its_idle_time_and_a_busy_one_none(cluster, head):
    actor = Holder.options(resources={"special": 1}).remote()
    assert kastor.get(actor.ping.remote(), timeout=DEADLINE_S) == "pong"
    wait_until(lambda: node(cluster, head, "special").idle_s == 0.0, "the actor's node busy", DEADLINE_S)
    wait_until(lambda: node(cluster, head, "n1").idle_s > 0.5, "the empty node idle", DEADLINE_S)
    kastor.kill(actor)
    wait_until(lambda: node(cluster, head, "special").idle_s > 0.0, "the node idle once its actor is gone",
               DEADLINE_S)


def test_a_drain_is_refused_while_the_node_runs_anything_and_then_takes_no_new_work(cluster, head):
    actor = Holder.options(resources={"special": 1}).remote()
    assert kastor.get(actor.ping.remote(), timeout=DEADLINE_S) == "pong"
    # Busy from its placement on: an idle time left from before the actor, until the next
    # heartbeat, let the wait below pass at once and the drain meet the actor's exiting worker.
    assert node(cluster, head, "special").idle_s == 0.0, "busy as soon as an actor is placed there"
    refused = head.drain_node(cluster.address, TOKEN, "special", "idle")
    assert not refused.accepted and "busy" in refused.message
    kastor.kill(actor)
    wait_until(lambda: node(cluster, head, "special").idle_s > 0.0, "the node idle", DEADLINE_S)
    assert head.drain_node(cluster.address, TOKEN, "special", "idle").accepted
    assert node(cluster, head, "special").draining
    late = Holder.options(resources={"special": 1}).remote()  # fits only the drained node
    wait_until(lambda: any(dict(s).get("special") == 1.0 for s in shapes(demand(cluster, head).pending, "actor")),
               "the actor that fits only the drained node pending, as demand", DEADLINE_S)
    task = needs_tpu.options(resources={"special": 1}).remote()  # nor does a task go there
    wait_until(lambda: any(dict(s).get("special") == 1.0 for s in shapes(demand(cluster, head).pending, "task")),
               "the task that fits only the drained node pending, as demand", DEADLINE_S)
    assert node(cluster, head, "special").idle_s > 0.0  # nothing started there
    kastor.kill(late)
    kastor.cancel(task, force=True)


def test_a_drained_node_agent_itself_refuses_an_actor_start(cluster, head):
    """The head places nothing on a draining node; the agent refuses too, for a start already on its way."""
    address = next(n.address for n in head.list_nodes(cluster.address, TOKEN) if n.node_id == "special")
    with grpc.insecure_channel(address) as channel:
        reply = pb_grpc.NodeAgentStub(channel).StartActor(
            pb.StartActorRequest(spec=pb.ActorSpec(actor_id=b"x" * 16, required={"special": 1.0})),
            metadata=auth.metadata(TOKEN), timeout=30)
    assert reply.no_resources and not reply.started
