"""PodDisruptionBudgets for an ActorCluster's head and managed Redis (pure builders).

Both are one pod that holds the cluster's state: a node drain (`kubectl drain`, a cluster
autoscaler's scale-down, a node upgrade) that evicted the head would restart every actor's
bookkeeping, and one that evicted the managed Redis would stop the GCS. A budget of
`minAvailable: 1` makes such voluntary evictions wait (the drain retries) until an admin
moves the pod on purpose, as KubeRay recommends for the head. `unhealthyPodEvictionPolicy:
AlwaysAllow` lets a pod that is not Ready go at once: it serves nothing, and a budget must
never keep a broken head on a node being drained. Involuntary disruptions (a lost node) are
not covered by any budget; `lost_nodes` handles those.

`spec.disruptionBudget.enabled: false` removes them (the operator deletes the budgets it made).
"""

from __future__ import annotations

from typing import Any

from kastor.operator.build_common import object_meta
from kastor.runtime import k8s_contract as contract

# The roles that get a budget: each is a single pod whose loss costs the cluster its state.
ROLES = ("head", "redis")


def pdb_name(cluster: str, role: str) -> str:
    """`<cluster>-head` / `<cluster>-redis`: a cluster name is at most 53 characters, so this fits."""
    return f"{cluster}-{role}"


def pod_disruption_budget(cr: dict[str, Any], role: str) -> dict[str, Any]:
    """The budget for the cluster's `role` pod (head or redis), owned by the ActorCluster."""
    if role not in ROLES:
        raise ValueError(f"no disruption budget for role {role!r}: only {', '.join(ROLES)}")
    meta = cr["metadata"]
    name, ns = meta["name"], meta["namespace"]
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": object_meta(pdb_name(name, role), ns, cr, contract.cluster_labels(name, role)),
            "spec": {"minAvailable": 1,
                     "selector": {"matchLabels": {contract.LABEL_CLUSTER: name, contract.LABEL_ROLE: role}},
                     "unhealthyPodEvictionPolicy": "AlwaysAllow"}}
