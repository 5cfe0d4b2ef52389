"""Names, labels and addresses shared by the builders and the reconcilers.

One place decides how a child object is named and labelled, so that the builder that
creates a pod and the reconciler that later lists it by label can never disagree.
"""

from __future__ import annotations

from kastor.runtime import settings

# Exit codes of `kastor actor-pod` after which the operator stops replacing the pod: a spec
# that can never work (bad class, bad args), and an actor the GCS declared dead.
from kastor.runtime.actor_pod import EXIT_ACTOR_DEAD, EXIT_BAD_SPEC  # noqa: F401  (re-exported)

GROUP = "kastor.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CLUSTER_PLURAL = "actorclusters"
ACTOR_PLURAL = "detachedactors"
CLUSTER_KIND = "ActorCluster"
ACTOR_KIND = "DetachedActor"

LABEL_CLUSTER = "kastor.dev/cluster"
LABEL_ROLE = "kastor.dev/role"                 # head | worker | redis | actor
LABEL_GROUP = "kastor.dev/worker-group"
LABEL_ACTOR = "kastor.dev/detached-actor"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_SPEC_HASH = "kastor.dev/spec-hash"  # which spec a pod was built from (spec changes roll it)
ANNOTATION_ATTEMPT = "kastor.dev/attempt"

MANAGER = "kastor-operator"
CONTAINER = "kastor"
TOKEN_KEY = "token"
REDIS_PASSWORD_KEY = "redis-password"
POD_IP_ENV = settings.POD_IP.name
REDIS_PORT = 6379
DEFAULT_REDIS_IMAGE = "redis:7.2-alpine"



def token_secret(cluster: str) -> str:
    return f"{cluster}-token"


def head_pod(cluster: str) -> str:
    return f"{cluster}-head"


def head_service(cluster: str) -> str:
    return f"{cluster}-head"


def redis_name(cluster: str) -> str:
    return f"{cluster}-redis"


def worker_prefix(cluster: str, group: str) -> str:
    return f"{cluster}-worker-{group}-"


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
