"""The contract between Kastor's Kubernetes parts: names, labels, exit codes, the token Secret.

Three programs must agree on these without importing each other: the operator (which
creates the objects), `kastor actor-pod` (the entry point of a DetachedActor's pod, whose
exit code tells the operator whether to replace it) and cluster discovery
(`kastor.init(cluster=...)`, which finds the head Service and the token Secret). Each
rule is written here once; this module imports nothing from Kastor, so the runtime may use
it without importing `kastor.operator`, and the operator without importing the runtime's
entry points.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from kastor.runtime import settings

GROUP = "kastor.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CLUSTER_PLURAL = "actorclusters"
ACTOR_PLURAL = "detachedactors"
CLUSTER_KIND = "ActorCluster"
WORKER_GROUP_PLURAL = "actorworkergroups"  # one per worker group, with a scale subresource (operator/worker_groups.py)
WORKER_GROUP_KIND = "ActorWorkerGroup"
ACTOR_KIND = "DetachedActor"

LABEL_CLUSTER = "kastor.dev/cluster"
LABEL_ROLE = "kastor.dev/role"                 # head | worker | redis | actor | auth
LABEL_GROUP = "kastor.dev/worker-group"
LABEL_ACTOR = "kastor.dev/detached-actor"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_SPEC_HASH = "kastor.dev/spec-hash"  # which spec a pod was built from (spec changes roll it)
ANNOTATION_ATTEMPT = "kastor.dev/attempt"

MANAGER = "kastor-operator"
CONTAINER = "kastor"
REDIS_PASSWORD_KEY = "redis-password"
POD_IP_ENV = settings.POD_IP.name
REDIS_PORT = 6379
DEFAULT_REDIS_IMAGE = "redis:7.2-alpine"

# ---- exit codes of `kastor actor-pod` ----
# The operator replaces a pod that exited EXIT_FAILED (or any code it does not know, such as
# argparse's usage error 2 from an image whose CLI differs); it stops replacing it after
# EXIT_BAD_SPEC and EXIT_ACTOR_DEAD, which no new pod can fix. The two terminal codes are
# chosen apart from 1 and 2 (Python's and argparse's) so that nothing but the entry point's
# own verdict can end an actor for good.
EXIT_FAILED = 1        # this pod failed (its node agent died, the head lost the actor): replace the pod
EXIT_BAD_SPEC = 78     # the spec can never work (sysexits' EX_CONFIG): do not replace the pod
EXIT_ACTOR_DEAD = 79   # the GCS declared the actor dead (constructor raised, restarts used up, killed)
TERMINAL_EXIT_CODES = frozenset({EXIT_BAD_SPEC, EXIT_ACTOR_DEAD})

# ---- the token Secret ----
TOKEN_KEY = "token"    # the key of the cluster token in its Secret, unless spec.auth.secretKey says otherwise


def token_secret(cluster: str, auth: Mapping[str, Any] | None = None) -> str:
    """The Secret holding a cluster's token: `spec.auth.secretName`, else `<cluster>-token`."""
    return (auth or {}).get("secretName") or f"{cluster}-token"


def token_key(auth: Mapping[str, Any] | None = None) -> str:
    """The key of the token in that Secret: `spec.auth.secretKey`, else TOKEN_KEY."""
    return (auth or {}).get("secretKey") or TOKEN_KEY


# ---- which names a resource may have ----
# An ActorCluster's name is part of its Service names (<name>-head, <name>-redis) and the
# value of LABEL_CLUSTER on every child: a DNS-1035 label, with room for the longest
# suffix. The CRDs reject other names at admission with the same pattern (a CEL rule); the
# operator checks again for resources admitted before that rule existed.
CLUSTER_NAME_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
CLUSTER_NAME_MAX = 53
ACTOR_NAME_MAX = 63  # a DetachedActor's name is the value of LABEL_ACTOR on its pods


def cluster_name_problem(name: str) -> str | None:
    """Why `name` cannot name an ActorCluster (its children could not be created), or None."""
    if len(name) <= CLUSTER_NAME_MAX and re.match(CLUSTER_NAME_PATTERN, name):
        return None
    return (f"ActorCluster name {name!r} cannot name its Services: use at most {CLUSTER_NAME_MAX} lowercase "
            f"letters, digits or '-', starting with a letter and ending with a letter or digit")


# ---- names of the children of an ActorCluster and a DetachedActor ----

def head_pod_prefix(cluster: str) -> str:
    """Head pods get generated names: a head stuck Terminating on a lost node does not block
    its replacement (pods are adopted by their controller's uid, not by name)."""
    return f"{cluster}-head-"


def head_service(cluster: str) -> str:
    return f"{cluster}-head"


def redis_name(cluster: str) -> str:
    """The managed Redis Service."""
    return f"{cluster}-redis"


def redis_statefulset(cluster: str) -> str:
    """The managed Redis's StatefulSet: `<cluster>-redis`, its pod `<cluster>-redis-0`.

    The StatefulSet controller labels each pod `controller-revision-hash: <name>-<hash>`,
    a label value of at most 63 characters, so the name must stay within 52: a longer
    cluster name is cut and made unique again with a digest of the whole."""
    name = f"{cluster}-redis"
    if len(name) <= 52:
        return name
    digest = hashlib.sha256(cluster.encode()).hexdigest()[:10]
    return f"{cluster[:35].rstrip('-')}-{digest}-redis"


REDIS_DATA_DIR = "/var/lib/redis"  # the managed Redis's append-only file (its volume's mountPath)


def worker_prefix(cluster: str, group: str) -> str:
    return f"{cluster}-worker-{group}-"


def worker_group(cluster: str, group: str) -> str:
    """The ActorWorkerGroup of a cluster's worker group: `<cluster>-<group>`, what `kubectl scale` names."""
    return f"{cluster}-{group}"


def actor_pod(actor: str, attempt: int) -> str:
    return f"{actor}-actor-{attempt}"


def service_host(service: str, namespace: str) -> str:
    """The in-cluster DNS name of a Service (resolvable from any namespace)."""
    return f"{service}.{namespace}.svc"


def cluster_id(namespace: str, cluster: str) -> str:
    """The key prefix of a cluster's GCS state: stable, so deletion can clean it without status."""
    return f"{namespace}.{cluster}"


def actor_resource(namespace: str, actor: str) -> str:
    """The custom resource only a DetachedActor's own pod advertises, so the head places it there."""
    return f"detachedactor/{namespace}/{actor}"


def cluster_labels(cluster: str, role: str) -> dict[str, str]:
    return {LABEL_CLUSTER: cluster, LABEL_ROLE: role, LABEL_MANAGED_BY: MANAGER}
