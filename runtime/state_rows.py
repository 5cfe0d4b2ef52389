"""Flat, JSON-ready rows of the head's node, actor and placement group tables.

One shape shared by `kastor list` / `kastor status` and `kastor.util.state`, so what a person
reads in the terminal and what a program reads from Python never drift apart.
"""

from kastor.runtime.placement import group_of
from kastor.runtime.protocol import kastor_pb2 as pb


def _job(job_id: bytes) -> int:
    return int.from_bytes(job_id, "big") if job_id else 0


def lease_row(lease: pb.LeaseInfo) -> dict:
    """One worker holding resources on a node: a task lease (with its owner) or an actor."""
    return {"kind": "actor" if lease.actor_id else "task", "job": _job(lease.job_id),
            "worker_id": lease.worker_id.hex(), "pid": lease.pid, "owner": lease.owner_address,
            "actor_id": lease.actor_id.hex(), "resources": dict(lease.resources), "blocked": lease.blocked}


def demand_row(demand: pb.ResourceDemand) -> dict:
    """A resource shape that work waits for and no node can fit (infeasible); with the label
    selectors it needs, when it has any (no node that fits matches them)."""
    row = {"shape": dict(demand.shape), "kind": demand.kind, "jobs": sorted(_job(j) for j in demand.job_ids)}
    if demand.labels:
        row["labels"] = [dict(s.match) for s in demand.labels]
    return row


def node_row(n: pb.NodeInfo) -> dict:
    used = {name: total - n.available.get(name, total) for name, total in n.total.items()}
    return {"node_id": n.node_id, "address": n.address, "alive": n.alive,
            "total": dict(n.total), "available": dict(n.available), "used": used,
            "object_store_dir": n.store_dir, "labels": dict(n.labels),
            "leases": [lease_row(x) for x in n.leases] if n.alive else [],
            "infeasible": [demand_row(d) for d in n.infeasible] if n.alive else []}


def actor_row(a: pb.ActorInfo) -> dict:
    return {"actor_id": a.spec.actor_id.hex(), "class": a.spec.class_name, "name": a.spec.name,
            "namespace": a.spec.namespace, "state": pb.ActorState.Name(a.state), "restarts": a.num_restarts,
            "max_restarts": a.spec.max_restarts, "detached": a.spec.detached, "node_id": a.node_id,
            "pid": a.pid, "death_cause": a.death_cause, "pending_reason": a.pending_reason}


def format_resources(used: dict[str, float], total: dict[str, float]) -> str:
    """`CPU 1/2, GPU 0/1, accelerator 0/4`: every resource, used/total, CPU and GPU first.

    A placement group's resources (CPU_group_..., see runtime/placement.py) are left out: the
    node's own CPU count already shows them as used, and the group has its own status line."""
    names = sorted((k for k in total if not group_of(k)), key=lambda k: ({"CPU": 0, "GPU": 1}.get(k, 2), k))
    return ", ".join(f"{name} {_amount(name, used.get(name, 0.0))}/{_amount(name, total[name])}" for name in names)


def format_shape(shape: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {_amount(k, v)}" for k, v in sorted(shape.items())) + "}"


def _amount(name: str, value: float) -> str:
    if name == "memory" and value >= 1 << 20:
        return f"{value / (1 << 30):.3g}GiB"
    return f"{value:g}"


GROUP_STATES = {pb.PG_PENDING: "PENDING", pb.PG_CREATED: "CREATED", pb.PG_REMOVED: "REMOVED",
                pb.PG_RESCHEDULING: "RESCHEDULING"}


def group_row(info: pb.PlacementGroupInfo) -> dict:
    """One group as Ray's placement_group_table() shows it (and `kastor list` / the state API)."""
    return {
        "placement_group_id": info.spec.placement_group_id.hex(),
        "name": info.spec.name,
        "namespace": info.spec.namespace,
        "bundles": {i: dict(b.resources) for i, b in enumerate(info.spec.bundles)},
        "bundles_to_node_id": {i: node for i, node in enumerate(info.bundle_nodes) if node},
        "strategy": info.spec.strategy,
        "state": GROUP_STATES.get(info.state, "UNKNOWN"),
        "is_detached": info.spec.detached,
        "stats": {"scheduling_state": info.pending_reason or GROUP_STATES.get(info.state, "")},
    }
