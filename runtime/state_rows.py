"""Flat, JSON-ready rows of the head's node and actor tables.

One shape shared by `kastor list` / `kastor status` and `kastor.util.state`, so what a person
reads in the terminal and what a program reads from Python never drift apart.
"""

from kastor.runtime.protocol import kastor_pb2 as pb


def node_row(n: pb.NodeInfo) -> dict:
    return {"node_id": n.node_id, "address": n.address, "alive": n.alive,
            "total": dict(n.total), "available": dict(n.available)}


def actor_row(a: pb.ActorInfo) -> dict:
    return {"actor_id": a.spec.actor_id.hex(), "class": a.spec.class_name, "name": a.spec.name,
            "namespace": a.spec.namespace, "state": pb.ActorState.Name(a.state), "restarts": a.num_restarts,
            "max_restarts": a.spec.max_restarts, "detached": a.spec.detached, "node_id": a.node_id,
            "pid": a.pid, "death_cause": a.death_cause}
