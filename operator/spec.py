"""Typed, defaulted views of the ActorCluster and DetachedActor specs.

The CRD schema rejects what it can at admission; these parsers apply the same defaults
(so the operator works even where an API server did not default) and check what a schema
cannot express, raising SpecError with a reason the reconciler puts in a condition.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from kastor.runtime import k8s_contract as contract
from kastor.runtime.node_labels import NODE_GROUP, check_node_labels

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CLASS_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class SpecError(ValueError):
    """A spec that cannot work; `reason` is the condition/Event reason (CamelCase)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Ports:
    control: int = 6380
    client: int = 10001
    dashboard: int = 8265
    relay: int = 10002  # the client port's frame relay (a notebook's actor calls and uploads)
    client_node_port: int | None = None  # with a NodePort Service: where clients outside reach the head


@dataclass(frozen=True)
class HeadSpec:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, Any] = field(default_factory=dict)
    memory: int = 0  # bytes the node advertises for memory= requests (0: none)
    object_store_bytes: int | None = None  # the /dev/shm sizeLimit (None: unbounded)
    service_type: str = "ClusterIP"
    dashboard_service_type: str = "ClusterIP"  # the <cluster>-dashboard Service's type
    ports: Ports = Ports()
    template: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerGroup:
    name: str
    replicas: int = 1
    min_replicas: int = 0
    max_replicas: int = 1000
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    custom_resources: dict[str, float] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    template: dict[str, Any] = field(default_factory=dict)
    memory: int = 0
    object_store_bytes: int | None = None
    labels: dict[str, str] = field(default_factory=dict)  # node labels for label_selector= (runtime/node_labels.py)

    @property
    def desired(self) -> int:
        """replicas, kept within [minReplicas, maxReplicas] (as an autoscaler would)."""
        return max(self.min_replicas, min(self.replicas, self.max_replicas))

    @property
    def node_labels(self) -> dict[str, str]:
        """The labels each worker carries: the group's, and `kastor.io/node-group: <name>` (KubeRay's
        ray.io/node-group); label_selector= picks nodes, and the autoscaler groups, by them."""
        return {**self.labels, NODE_GROUP: self.name}

    @property
    def shape(self) -> dict[str, float]:
        """The resources each worker of the group advertises to the head (what the autoscaler fits work on)."""
        return {k: v for k, v in {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.custom_resources}.items() if v}


@dataclass(frozen=True)
class AutoscalingSpec:
    """`spec.autoscaling`: the operator sizes each worker group between minReplicas and maxReplicas
    from the head's demand, and removes workers idle for idle_timeout_s (spec.replicas is then only
    the initial size)."""
    enabled: bool = False
    idle_timeout_s: float = 60.0


@dataclass(frozen=True)
class RedisStorage:
    """`spec.gcs.redis.storage`: the managed Redis's data on a PersistentVolumeClaim (the
    StatefulSet's volumeClaimTemplate), so its append-only file outlives the Redis pod."""
    size: str = "1Gi"
    storage_class: str | None = None


@dataclass(frozen=True)
class RedisSpec:
    managed: bool = False
    image: str = contract.DEFAULT_REDIS_IMAGE
    address: str | None = None
    password_secret: str | None = None
    password_key: str = "password"
    resources: dict[str, Any] = field(default_factory=dict)  # the managed Redis container's
    storage: RedisStorage | None = None  # None: an emptyDir (lost with the pod, kept across container restarts)

    @property
    def enabled(self) -> bool:
        return self.managed or bool(self.address)


UPGRADE_STRATEGIES = ("RollingUpdate", "Recreate", "None")


@dataclass(frozen=True)
class ClusterSpec:
    image: str
    image_pull_policy: str = "IfNotPresent"
    suspend: bool = False
    head: HeadSpec = HeadSpec()
    worker_groups: tuple[WorkerGroup, ...] = ()
    redis: RedisSpec = RedisSpec()
    token_secret: str | None = None
    token_key: str = contract.TOKEN_KEY
    tls_secret: str | None = None  # a kubernetes.io/tls Secret with ca.crt: TLS on every port
    autoscaling: AutoscalingSpec = AutoscalingSpec()
    upgrade_strategy: str = "RollingUpdate"  # how a spec change reaches running pods (see operator/rollout.py)
    disruption_budgets: bool = True  # PodDisruptionBudgets for the head and the managed Redis (build_disruption.py)

    @property
    def desired_workers(self) -> int:
        return sum(g.desired for g in self.worker_groups)


def _number(value: Any, what: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise SpecError("InvalidSpec", f"{what} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def _integer(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError("InvalidSpec", f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _redis_storage(redis_raw: dict[str, Any]) -> RedisStorage | None:
    raw = redis_raw.get("storage")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SpecError("InvalidSpec", "spec.gcs.redis.storage must be an object, e.g. {size: 1Gi}")
    return RedisStorage(size=str(raw.get("size", "1Gi")), storage_class=raw.get("storageClassName"))


SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")


def _service_type(value: Any, where: str) -> str:
    if value not in SERVICE_TYPES:
        raise SpecError("InvalidSpec", f"{where} must be one of {', '.join(SERVICE_TYPES)}, got {value!r}")
    return value


def _node_labels(raw: Any, where: str) -> dict[str, str]:
    """A worker group's node labels, checked as `kastor start --labels` checks them."""
    try:
        return check_node_labels(raw or {}, where)
    except (TypeError, ValueError) as e:
        raise SpecError("InvalidSpec", str(e)) from None


def parse_cluster(spec: dict[str, Any]) -> ClusterSpec:
    image = spec.get("image")
    if not isinstance(image, str) or not image:
        raise SpecError("InvalidSpec", "spec.image is required: the Kastor image the head and workers run")
    head_raw = spec.get("head") or {}
    ports_raw = head_raw.get("ports") or {}
    ports = Ports(**{k: _integer(ports_raw.get(k, getattr(Ports, k)), f"spec.head.ports.{k}", 1)
                     for k in ("control", "client", "dashboard", "relay")},
                  client_node_port=ports_raw.get("clientNodePort"))
    head = HeadSpec(**advertised(head_raw, "spec.head"), resources=dict(head_raw.get("resources") or {}),
                    service_type=head_raw.get("serviceType", "ClusterIP"),
                    dashboard_service_type=_service_type(head_raw.get("dashboardServiceType", "ClusterIP"),
                                                         "spec.head.dashboardServiceType"),
                    ports=ports,
                    template=dict(head_raw.get("template") or {}))
    groups: list[WorkerGroup] = []
    for i, g in enumerate(spec.get("workerGroups") or []):
        where = f"spec.workerGroups[{i}]"
        name = g.get("name", "")
        if not isinstance(name, str) or not _DNS_LABEL.match(name) or len(name) > 30:
            raise SpecError("InvalidSpec", f"{where}.name must be a DNS label of at most 30 characters, got {name!r}")
        if any(other.name == name for other in groups):
            raise SpecError("InvalidSpec", f"{where}.name {name!r} is used by two worker groups")
        group = WorkerGroup(
            name=name, replicas=_integer(g.get("replicas", 1), f"{where}.replicas", 0),
            min_replicas=_integer(g.get("minReplicas", 0), f"{where}.minReplicas", 0),
            max_replicas=_integer(g.get("maxReplicas", 1000), f"{where}.maxReplicas", 0),
            **advertised(g, where),
            custom_resources={k: _number(v, f"{where}.customResources.{k}")
                              for k, v in (g.get("customResources") or {}).items()},
            resources=dict(g.get("resources") or {}), template=dict(g.get("template") or {}),
            labels=_node_labels(g.get("labels"), f"{where}.labels"))
        if group.min_replicas > group.max_replicas:
            raise SpecError("InvalidSpec", f"{where}: minReplicas ({group.min_replicas}) exceeds maxReplicas "
                                           f"({group.max_replicas})")
        groups.append(group)
    redis_raw = ((spec.get("gcs") or {}).get("redis")) or {}
    secret_ref = redis_raw.get("passwordSecret") or {}
    redis = RedisSpec(managed=bool(redis_raw.get("managed", False)),
                      image=redis_raw.get("image", contract.DEFAULT_REDIS_IMAGE), address=redis_raw.get("address"),
                      password_secret=secret_ref.get("name"), password_key=secret_ref.get("key", "password"),
                      resources=dict(redis_raw.get("resources") or {}), storage=_redis_storage(redis_raw))
    if redis.managed and redis.address:
        raise SpecError("InvalidSpec", "spec.gcs.redis: set either managed: true or address, not both")
    upgrade = ((spec.get("upgradeStrategy") or {}).get("type")) or "RollingUpdate"
    if upgrade not in UPGRADE_STRATEGIES:
        raise SpecError("InvalidSpec", f"spec.upgradeStrategy.type must be one of {', '.join(UPGRADE_STRATEGIES)}, "
                                       f"got {upgrade!r}")
    auth = spec.get("auth") or {}
    scaling_raw = spec.get("autoscaling") or {}
    scaling = AutoscalingSpec(enabled=bool(scaling_raw.get("enabled", False)),
                              idle_timeout_s=_number(scaling_raw.get("idleTimeoutSeconds", 60),
                                                     "spec.autoscaling.idleTimeoutSeconds"))
    return ClusterSpec(image=image, image_pull_policy=spec.get("imagePullPolicy", "IfNotPresent"),
                       suspend=bool(spec.get("suspend", False)), head=head, worker_groups=tuple(groups),
                       redis=redis, token_secret=auth.get("secretName"), token_key=contract.token_key(auth),
                       tls_secret=(spec.get("tls") or {}).get("secretName"), autoscaling=scaling,
                       upgrade_strategy=upgrade,
                       disruption_budgets=bool((spec.get("disruptionBudget") or {}).get("enabled", True)))


@dataclass(frozen=True)
class StateSpec:
    """`spec.state`: durable actor state (kastor.state). `store` is "redis" (the cluster's GCS
    Redis) or "volume" (a PersistentVolumeClaim the operator creates and mounts)."""

    store: str = "redis"
    every: str = "call"
    max_bytes: int = 64 * 2**20
    on_corrupt: str = "fail"
    size: str = "1Gi"
    storage_class: str | None = None


@dataclass(frozen=True)
class ActorSpec:
    cluster: str
    actor_class: str
    name: str
    namespace: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_restarts: int = 0
    max_task_retries: int = 0
    max_concurrency: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, Any] = field(default_factory=dict)
    image: str | None = None
    env: list[dict[str, Any]] = field(default_factory=list)
    state: StateSpec | None = None


def parse_state(raw: Any) -> StateSpec | None:
    """`spec.state`, checked as the schema does (for API servers that did not validate)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SpecError("InvalidSpec", "spec.state must be an object, e.g. {store: redis}")
    store = raw.get("store", "redis")
    if store not in ("redis", "volume"):
        raise SpecError("InvalidSpec", f"spec.state.store must be 'redis' (the cluster's Redis) or 'volume' (a "
                                       f"PersistentVolumeClaim), got {store!r}")
    every = str(raw.get("every", "call"))
    from kastor.state import Checkpoint, FileStore
    try:
        Checkpoint(store=FileStore("/"), every=int(every) if every.isdigit() else every,
                   max_bytes=_integer(raw.get("maxBytes", 64 * 2**20), "spec.state.maxBytes", 1),
                   on_corrupt=raw.get("onCorrupt", "fail"))
    except ValueError as e:
        raise SpecError("InvalidSpec", f"spec.state: {e}") from None
    volume = raw.get("volume") or {}
    return StateSpec(store=store, every=every, max_bytes=int(raw.get("maxBytes", 64 * 2**20)),
                     on_corrupt=raw.get("onCorrupt", "fail"), size=str(volume.get("size", "1Gi")),
                     storage_class=volume.get("storageClassName"))


def parse_actor(spec: dict[str, Any], meta_name: str, meta_namespace: str) -> ActorSpec:
    cluster = spec.get("clusterRef")
    if not isinstance(cluster, str) or not cluster:
        raise SpecError("InvalidSpec", "spec.clusterRef is required: the name of an ActorCluster in this namespace")
    actor_class = spec.get("actorClass")
    if not isinstance(actor_class, str) or not _CLASS_PATH.match(actor_class):
        raise SpecError("InvalidSpec", f"spec.actorClass must be an import path 'module:Class', got {actor_class!r}")
    args, kwargs = spec.get("args", []), spec.get("kwargs", {})
    if not isinstance(args, list):
        raise SpecError("InvalidSpec", "spec.args must be a list of JSON values")
    if not isinstance(kwargs, dict):
        raise SpecError("InvalidSpec", "spec.kwargs must be an object of JSON values")
    resources = dict(spec.get("resources") or {})
    return ActorSpec(
        cluster=cluster, actor_class=actor_class, name=spec.get("name") or meta_name,
        namespace=spec.get("namespace") or meta_namespace, args=args, kwargs=kwargs,
        max_restarts=_integer(spec.get("maxRestarts", 0), "spec.maxRestarts", -1),
        max_task_retries=_integer(spec.get("maxTaskRetries", 0), "spec.maxTaskRetries", -1),
        max_concurrency=_integer(spec.get("maxConcurrency", 1), "spec.maxConcurrency", 1),
        num_cpus=max(1.0, cpu_quantity((resources.get("requests") or {}).get("cpu", 1))),
        num_gpus=cpu_quantity((resources.get("limits") or {}).get("nvidia.com/gpu", 0)),
        resources=resources, image=spec.get("image"), env=list(spec.get("env") or []),
        state=parse_state(spec.get("state")))


# Ray's default object store: 30% of the node's memory.
OBJECT_STORE_SHARE = 0.3


def _container_resource(resources: dict[str, Any], name: str) -> Any:
    """A container's `name` resource as KubeRay reads it: the limit, else the request, else None."""
    for kind in ("limits", "requests"):
        value = (resources.get(kind) or {}).get(name)
        if value is not None:
            return value
    return None


def advertised(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """What a head or worker node advertises, from its spec entry: numCpus and numGpus if set,
    else derived from the container's resources as KubeRay does (cpu rounded up, nvidia.com/gpu,
    limits before requests; 1 CPU and 0 GPUs without either); its memory (the container's
    memory); and its object store size, the /dev/shm sizeLimit (`objectStoreMemory`, else 30%
    of that memory as Ray's default, else unbounded)."""
    resources = raw.get("resources") or {}
    if not isinstance(resources, dict):
        raise SpecError("InvalidSpec", f"{where}.resources must be an object with limits and/or requests")
    cpu, gpu = _container_resource(resources, "cpu"), _container_resource(resources, "nvidia.com/gpu")
    num_cpus = _number(raw["numCpus"], f"{where}.numCpus") if raw.get("numCpus") is not None else \
        float(math.ceil(cpu_quantity(cpu))) if cpu is not None else 1.0
    num_gpus = _number(raw["numGpus"], f"{where}.numGpus") if raw.get("numGpus") is not None else \
        cpu_quantity(gpu) if gpu is not None else 0.0
    memory_raw = _container_resource(resources, "memory")
    memory = int(memory_quantity(memory_raw)) if memory_raw is not None else 0
    if raw.get("objectStoreMemory") is not None:
        store: int | None = int(memory_quantity(raw["objectStoreMemory"]))
        if store < 1:
            raise SpecError("InvalidSpec", f"{where}.objectStoreMemory must be a positive quantity, e.g. 2Gi")
        if memory and store > memory:
            raise SpecError("InvalidSpec", f"{where}.objectStoreMemory ({raw['objectStoreMemory']}) exceeds the "
                                           f"container's memory ({memory_raw}): /dev/shm is memory, and would get "
                                           f"the container OOM-killed; lower it or raise the memory")
    else:
        store = int(memory * OBJECT_STORE_SHARE) or None
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, "memory": memory, "object_store_bytes": store}


_MEMORY_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
                  "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "m": 10**-3, "": 1}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([-+]?[0-9]+))?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$")


def memory_quantity(value: Any) -> float:
    """A Kubernetes quantity ('512Mi', '2Gi', '1G', '129e6', 1024) as a number of bytes."""
    if isinstance(value, bool):
        raise SpecError("InvalidSpec", f"not a memory quantity: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise SpecError("InvalidSpec", f"not a memory quantity: {value!r} (e.g. 512Mi, 2Gi, 1G)")
    number, exponent, suffix = match.groups()
    return float(number) * 10 ** int(exponent or 0) * _MEMORY_SUFFIX[suffix or ""]


def cpu_quantity(value: Any) -> float:
    """A Kubernetes CPU quantity ('500m', '2', 1.5) as a number of CPUs."""
    if isinstance(value, bool):
        raise SpecError("InvalidSpec", f"not a CPU quantity: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise SpecError("InvalidSpec", f"not a CPU quantity: {value!r}") from None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
