from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_OK: _ClassVar[TaskStatus]
    TASK_APP_ERROR: _ClassVar[TaskStatus]
    TASK_CANCELLED: _ClassVar[TaskStatus]
    TASK_ACTOR_EXITED: _ClassVar[TaskStatus]
    TASK_SYSTEM_ERROR: _ClassVar[TaskStatus]

class ActorState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PENDING: _ClassVar[ActorState]
    ALIVE: _ClassVar[ActorState]
    RESTARTING: _ClassVar[ActorState]
    DEAD: _ClassVar[ActorState]

class PlacementGroupState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PG_PENDING: _ClassVar[PlacementGroupState]
    PG_CREATED: _ClassVar[PlacementGroupState]
    PG_REMOVED: _ClassVar[PlacementGroupState]
    PG_RESCHEDULING: _ClassVar[PlacementGroupState]
TASK_OK: TaskStatus
TASK_APP_ERROR: TaskStatus
TASK_CANCELLED: TaskStatus
TASK_ACTOR_EXITED: TaskStatus
TASK_SYSTEM_ERROR: TaskStatus
PENDING: ActorState
ALIVE: ActorState
RESTARTING: ActorState
DEAD: ActorState
PG_PENDING: PlacementGroupState
PG_CREATED: PlacementGroupState
PG_REMOVED: PlacementGroupState
PG_RESCHEDULING: PlacementGroupState

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ObjectLocation(_message.Message):
    __slots__ = ("node_id", "node_address", "path", "size")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    node_address: str
    path: str
    size: int
    def __init__(self, node_id: _Optional[str] = ..., node_address: _Optional[str] = ..., path: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("data", "location", "is_error", "nested", "pinned_at")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    NESTED_FIELD_NUMBER: _ClassVar[int]
    PINNED_AT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    location: ObjectLocation
    is_error: bool
    nested: _containers.RepeatedCompositeFieldContainer[NestedRef]
    pinned_at: str
    def __init__(self, data: _Optional[bytes] = ..., location: _Optional[_Union[ObjectLocation, _Mapping]] = ..., is_error: _Optional[bool] = ..., nested: _Optional[_Iterable[_Union[NestedRef, _Mapping]]] = ..., pinned_at: _Optional[str] = ...) -> None: ...

class NestedRef(_message.Message):
    __slots__ = ("object_id", "owner")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    object_id: bytes
    owner: str
    def __init__(self, object_id: _Optional[bytes] = ..., owner: _Optional[str] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("spread", "node_id", "soft", "labels")
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SOFT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    spread: bool
    node_id: str
    soft: bool
    labels: _containers.RepeatedCompositeFieldContainer[LabelSelector]
    def __init__(self, spread: _Optional[bool] = ..., node_id: _Optional[str] = ..., soft: _Optional[bool] = ..., labels: _Optional[_Iterable[_Union[LabelSelector, _Mapping]]] = ...) -> None: ...

class LabelSelector(_message.Message):
    __slots__ = ("match",)
    class MatchEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MATCH_FIELD_NUMBER: _ClassVar[int]
    match: _containers.ScalarMap[str, str]
    def __init__(self, match: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("task_id", "job_id", "function_id", "method", "args", "ref_args", "num_returns", "name", "parent_task_id", "actor_id", "attempt", "owner_address", "owner_worker_id", "gpu_ids", "namespace", "generator", "env_vars", "concurrency_group", "stream_items", "max_calls", "num_cpus", "runtime_env", "placement_group")
    class EnvVarsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    REF_ARGS_FIELD_NUMBER: _ClassVar[int]
    NUM_RETURNS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OWNER_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_IDS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    ENV_VARS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_GROUP_FIELD_NUMBER: _ClassVar[int]
    STREAM_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_CALLS_FIELD_NUMBER: _ClassVar[int]
    NUM_CPUS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_ENV_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    job_id: bytes
    function_id: str
    method: str
    args: Value
    ref_args: _containers.RepeatedCompositeFieldContainer[Value]
    num_returns: int
    name: str
    parent_task_id: bytes
    actor_id: bytes
    attempt: int
    owner_address: str
    owner_worker_id: bytes
    gpu_ids: _containers.RepeatedScalarFieldContainer[int]
    namespace: str
    generator: bool
    env_vars: _containers.ScalarMap[str, str]
    concurrency_group: str
    stream_items: bool
    max_calls: int
    num_cpus: float
    runtime_env: str
    placement_group: PlacementGroupRef
    def __init__(self, task_id: _Optional[bytes] = ..., job_id: _Optional[bytes] = ..., function_id: _Optional[str] = ..., method: _Optional[str] = ..., args: _Optional[_Union[Value, _Mapping]] = ..., ref_args: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., num_returns: _Optional[int] = ..., name: _Optional[str] = ..., parent_task_id: _Optional[bytes] = ..., actor_id: _Optional[bytes] = ..., attempt: _Optional[int] = ..., owner_address: _Optional[str] = ..., owner_worker_id: _Optional[bytes] = ..., gpu_ids: _Optional[_Iterable[int]] = ..., namespace: _Optional[str] = ..., generator: _Optional[bool] = ..., env_vars: _Optional[_Mapping[str, str]] = ..., concurrency_group: _Optional[str] = ..., stream_items: _Optional[bool] = ..., max_calls: _Optional[int] = ..., num_cpus: _Optional[float] = ..., runtime_env: _Optional[str] = ..., placement_group: _Optional[_Union[PlacementGroupRef, _Mapping]] = ...) -> None: ...

class GeneratorItem(_message.Message):
    __slots__ = ("task_id", "index", "value")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    index: int
    value: Value
    def __init__(self, task_id: _Optional[bytes] = ..., index: _Optional[int] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "status", "returns", "error", "attempt", "incarnation")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RETURNS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    status: TaskStatus
    returns: _containers.RepeatedCompositeFieldContainer[Value]
    error: Value
    attempt: int
    incarnation: int
    def __init__(self, task_id: _Optional[bytes] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., returns: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., error: _Optional[_Union[Value, _Mapping]] = ..., attempt: _Optional[int] = ..., incarnation: _Optional[int] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ...) -> None: ...

class ExecuteReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TaskResult]
    def __init__(self, results: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ...) -> None: ...

class MethodMeta(_message.Message):
    __slots__ = ("name", "num_returns", "is_async", "is_generator", "concurrency_group", "params", "has_signature")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_RETURNS_FIELD_NUMBER: _ClassVar[int]
    IS_ASYNC_FIELD_NUMBER: _ClassVar[int]
    IS_GENERATOR_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_GROUP_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    HAS_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    num_returns: int
    is_async: bool
    is_generator: bool
    concurrency_group: str
    params: _containers.RepeatedCompositeFieldContainer[MethodParam]
    has_signature: bool
    def __init__(self, name: _Optional[str] = ..., num_returns: _Optional[int] = ..., is_async: _Optional[bool] = ..., is_generator: _Optional[bool] = ..., concurrency_group: _Optional[str] = ..., params: _Optional[_Iterable[_Union[MethodParam, _Mapping]]] = ..., has_signature: _Optional[bool] = ...) -> None: ...

class MethodParam(_message.Message):
    __slots__ = ("name", "kind", "has_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HAS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: int
    has_default: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[int] = ..., has_default: _Optional[bool] = ...) -> None: ...

class ActorSpec(_message.Message):
    __slots__ = ("actor_id", "job_id", "class_id", "class_name", "args", "ref_args", "name", "namespace", "detached", "max_restarts", "max_task_retries", "max_concurrency", "is_async", "required", "held", "owner_worker_id", "owner_address", "methods", "job_namespace", "env_vars", "concurrency_groups", "placement", "max_pending_calls", "state", "runtime_env", "placement_group")
    class RequiredEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class HeldEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class EnvVarsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ConcurrencyGroupsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    REF_ARGS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TASK_RETRIES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    IS_ASYNC_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    OWNER_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    JOB_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ENV_VARS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_GROUPS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    MAX_PENDING_CALLS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_ENV_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_FIELD_NUMBER: _ClassVar[int]
    actor_id: bytes
    job_id: bytes
    class_id: str
    class_name: str
    args: Value
    ref_args: _containers.RepeatedCompositeFieldContainer[Value]
    name: str
    namespace: str
    detached: bool
    max_restarts: int
    max_task_retries: int
    max_concurrency: int
    is_async: bool
    required: _containers.ScalarMap[str, float]
    held: _containers.ScalarMap[str, float]
    owner_worker_id: bytes
    owner_address: str
    methods: _containers.RepeatedCompositeFieldContainer[MethodMeta]
    job_namespace: str
    env_vars: _containers.ScalarMap[str, str]
    concurrency_groups: _containers.ScalarMap[str, int]
    placement: Placement
    max_pending_calls: int
    state: bytes
    runtime_env: str
    placement_group: PlacementGroupRef
    def __init__(self, actor_id: _Optional[bytes] = ..., job_id: _Optional[bytes] = ..., class_id: _Optional[str] = ..., class_name: _Optional[str] = ..., args: _Optional[_Union[Value, _Mapping]] = ..., ref_args: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., name: _Optional[str] = ..., namespace: _Optional[str] = ..., detached: _Optional[bool] = ..., max_restarts: _Optional[int] = ..., max_task_retries: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., is_async: _Optional[bool] = ..., required: _Optional[_Mapping[str, float]] = ..., held: _Optional[_Mapping[str, float]] = ..., owner_worker_id: _Optional[bytes] = ..., owner_address: _Optional[str] = ..., methods: _Optional[_Iterable[_Union[MethodMeta, _Mapping]]] = ..., job_namespace: _Optional[str] = ..., env_vars: _Optional[_Mapping[str, str]] = ..., concurrency_groups: _Optional[_Mapping[str, int]] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ..., max_pending_calls: _Optional[int] = ..., state: _Optional[bytes] = ..., runtime_env: _Optional[str] = ..., placement_group: _Optional[_Union[PlacementGroupRef, _Mapping]] = ...) -> None: ...

class ActorInfo(_message.Message):
    __slots__ = ("spec", "state", "address", "node_id", "pid", "num_restarts", "death_cause", "death_error", "version", "worker_id", "killed", "pending_reason", "data_port")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    NUM_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    DEATH_CAUSE_FIELD_NUMBER: _ClassVar[int]
    DEATH_ERROR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    KILLED_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    DATA_PORT_FIELD_NUMBER: _ClassVar[int]
    spec: ActorSpec
    state: ActorState
    address: str
    node_id: str
    pid: int
    num_restarts: int
    death_cause: str
    death_error: Value
    version: int
    worker_id: bytes
    killed: bool
    pending_reason: str
    data_port: int
    def __init__(self, spec: _Optional[_Union[ActorSpec, _Mapping]] = ..., state: _Optional[_Union[ActorState, str]] = ..., address: _Optional[str] = ..., node_id: _Optional[str] = ..., pid: _Optional[int] = ..., num_restarts: _Optional[int] = ..., death_cause: _Optional[str] = ..., death_error: _Optional[_Union[Value, _Mapping]] = ..., version: _Optional[int] = ..., worker_id: _Optional[bytes] = ..., killed: _Optional[bool] = ..., pending_reason: _Optional[str] = ..., data_port: _Optional[int] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "address", "ip", "total", "available", "alive", "last_heartbeat", "store_dir", "leases", "infeasible", "labels")
    class TotalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class AvailableEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STORE_DIR_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    INFEASIBLE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    ip: str
    total: _containers.ScalarMap[str, float]
    available: _containers.ScalarMap[str, float]
    alive: bool
    last_heartbeat: float
    store_dir: str
    leases: _containers.RepeatedCompositeFieldContainer[LeaseInfo]
    infeasible: _containers.RepeatedCompositeFieldContainer[ResourceDemand]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., ip: _Optional[str] = ..., total: _Optional[_Mapping[str, float]] = ..., available: _Optional[_Mapping[str, float]] = ..., alive: _Optional[bool] = ..., last_heartbeat: _Optional[float] = ..., store_dir: _Optional[str] = ..., leases: _Optional[_Iterable[_Union[LeaseInfo, _Mapping]]] = ..., infeasible: _Optional[_Iterable[_Union[ResourceDemand, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class LeaseInfo(_message.Message):
    __slots__ = ("worker_id", "pid", "job_id", "owner_address", "resources", "actor_id", "blocked")
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    worker_id: bytes
    pid: int
    job_id: bytes
    owner_address: str
    resources: _containers.ScalarMap[str, float]
    actor_id: bytes
    blocked: bool
    def __init__(self, worker_id: _Optional[bytes] = ..., pid: _Optional[int] = ..., job_id: _Optional[bytes] = ..., owner_address: _Optional[str] = ..., resources: _Optional[_Mapping[str, float]] = ..., actor_id: _Optional[bytes] = ..., blocked: _Optional[bool] = ...) -> None: ...

class ResourceDemand(_message.Message):
    __slots__ = ("shape", "job_ids", "kind", "count", "labels")
    class ShapeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.ScalarMap[str, float]
    job_ids: _containers.RepeatedScalarFieldContainer[bytes]
    kind: str
    count: int
    labels: _containers.RepeatedCompositeFieldContainer[LabelSelector]
    def __init__(self, shape: _Optional[_Mapping[str, float]] = ..., job_ids: _Optional[_Iterable[bytes]] = ..., kind: _Optional[str] = ..., count: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[LabelSelector, _Mapping]]] = ...) -> None: ...

class RegisterNodeReply(_message.Message):
    __slots__ = ("cluster_id", "node_death_timeout_s")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_DEATH_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    node_death_timeout_s: float
    def __init__(self, cluster_id: _Optional[str] = ..., node_death_timeout_s: _Optional[float] = ...) -> None: ...

class LiveActor(_message.Message):
    __slots__ = ("actor_id", "worker_id", "address", "pid", "num_restarts")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    NUM_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    actor_id: bytes
    worker_id: bytes
    address: str
    pid: int
    num_restarts: int
    def __init__(self, actor_id: _Optional[bytes] = ..., worker_id: _Optional[bytes] = ..., address: _Optional[str] = ..., pid: _Optional[int] = ..., num_restarts: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "available", "actors", "leases", "infeasible", "total", "queued", "draining")
    class AvailableEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TotalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    INFEASIBLE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    available: _containers.ScalarMap[str, float]
    actors: _containers.RepeatedCompositeFieldContainer[LiveActor]
    leases: _containers.RepeatedCompositeFieldContainer[LeaseInfo]
    infeasible: _containers.RepeatedCompositeFieldContainer[ResourceDemand]
    total: _containers.ScalarMap[str, float]
    queued: _containers.RepeatedCompositeFieldContainer[ResourceDemand]
    draining: bool
    def __init__(self, node_id: _Optional[str] = ..., available: _Optional[_Mapping[str, float]] = ..., actors: _Optional[_Iterable[_Union[LiveActor, _Mapping]]] = ..., leases: _Optional[_Iterable[_Union[LeaseInfo, _Mapping]]] = ..., infeasible: _Optional[_Iterable[_Union[ResourceDemand, _Mapping]]] = ..., total: _Optional[_Mapping[str, float]] = ..., queued: _Optional[_Iterable[_Union[ResourceDemand, _Mapping]]] = ..., draining: _Optional[bool] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("known", "kill_worker_ids")
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    KILL_WORKER_IDS_FIELD_NUMBER: _ClassVar[int]
    known: bool
    kill_worker_ids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, known: _Optional[bool] = ..., kill_worker_ids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class RegisterJobRequest(_message.Message):
    __slots__ = ("namespace", "driver_address", "pid")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DRIVER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    driver_address: str
    pid: int
    def __init__(self, namespace: _Optional[str] = ..., driver_address: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...

class RegisterJobReply(_message.Message):
    __slots__ = ("job_id", "namespace", "cluster_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: bytes
    namespace: str
    cluster_id: str
    def __init__(self, job_id: _Optional[bytes] = ..., namespace: _Optional[str] = ..., cluster_id: _Optional[str] = ...) -> None: ...

class JobSessionRequest(_message.Message):
    __slots__ = ("job_id", "reconnect_grace_s", "logs")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_GRACE_S_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    job_id: bytes
    reconnect_grace_s: float
    logs: bool
    def __init__(self, job_id: _Optional[bytes] = ..., reconnect_grace_s: _Optional[float] = ..., logs: _Optional[bool] = ...) -> None: ...

class WorkerLog(_message.Message):
    __slots__ = ("job_id", "label", "pid", "ip", "is_err", "lines")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    IS_ERR_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    job_id: bytes
    label: str
    pid: int
    ip: str
    is_err: bool
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[bytes] = ..., label: _Optional[str] = ..., pid: _Optional[int] = ..., ip: _Optional[str] = ..., is_err: _Optional[bool] = ..., lines: _Optional[_Iterable[str]] = ...) -> None: ...

class PublishLogsRequest(_message.Message):
    __slots__ = ("logs",)
    LOGS_FIELD_NUMBER: _ClassVar[int]
    logs: _containers.RepeatedCompositeFieldContainer[WorkerLog]
    def __init__(self, logs: _Optional[_Iterable[_Union[WorkerLog, _Mapping]]] = ...) -> None: ...

class FinishJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: bytes
    def __init__(self, job_id: _Optional[bytes] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("kind", "logs")
    KIND_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    logs: _containers.RepeatedCompositeFieldContainer[WorkerLog]
    def __init__(self, kind: _Optional[str] = ..., logs: _Optional[_Iterable[_Union[WorkerLog, _Mapping]]] = ...) -> None: ...

class CreateActorRequest(_message.Message):
    __slots__ = ("spec", "get_if_exists")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    GET_IF_EXISTS_FIELD_NUMBER: _ClassVar[int]
    spec: ActorSpec
    get_if_exists: bool
    def __init__(self, spec: _Optional[_Union[ActorSpec, _Mapping]] = ..., get_if_exists: _Optional[bool] = ...) -> None: ...

class CreateActorReply(_message.Message):
    __slots__ = ("info", "existed")
    INFO_FIELD_NUMBER: _ClassVar[int]
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    info: ActorInfo
    existed: bool
    def __init__(self, info: _Optional[_Union[ActorInfo, _Mapping]] = ..., existed: _Optional[bool] = ...) -> None: ...

class GetActorRequest(_message.Message):
    __slots__ = ("actor_id", "name", "namespace", "after_version", "timeout_s")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    actor_id: bytes
    name: str
    namespace: str
    after_version: int
    timeout_s: float
    def __init__(self, actor_id: _Optional[bytes] = ..., name: _Optional[str] = ..., namespace: _Optional[str] = ..., after_version: _Optional[int] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class GetActorReply(_message.Message):
    __slots__ = ("found", "info", "unregistered")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    UNREGISTERED_FIELD_NUMBER: _ClassVar[int]
    found: bool
    info: ActorInfo
    unregistered: bool
    def __init__(self, found: _Optional[bool] = ..., info: _Optional[_Union[ActorInfo, _Mapping]] = ..., unregistered: _Optional[bool] = ...) -> None: ...

class KillActorRequest(_message.Message):
    __slots__ = ("actor_id", "no_restart", "reason")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    NO_RESTART_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    actor_id: bytes
    no_restart: bool
    reason: str
    def __init__(self, actor_id: _Optional[bytes] = ..., no_restart: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class KillActorReply(_message.Message):
    __slots__ = ("known", "has_state")
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    HAS_STATE_FIELD_NUMBER: _ClassVar[int]
    known: bool
    has_state: bool
    def __init__(self, known: _Optional[bool] = ..., has_state: _Optional[bool] = ...) -> None: ...

class WorkerDeath(_message.Message):
    __slots__ = ("node_id", "worker_id", "actor_id", "intentional", "cause")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    INTENTIONAL_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    worker_id: bytes
    actor_id: bytes
    intentional: bool
    cause: str
    def __init__(self, node_id: _Optional[str] = ..., worker_id: _Optional[bytes] = ..., actor_id: _Optional[bytes] = ..., intentional: _Optional[bool] = ..., cause: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ActorList(_message.Message):
    __slots__ = ("actors",)
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    actors: _containers.RepeatedCompositeFieldContainer[ActorInfo]
    def __init__(self, actors: _Optional[_Iterable[_Union[ActorInfo, _Mapping]]] = ...) -> None: ...

class NodeList(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "namespace", "driver_address", "pid", "connected")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DRIVER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    job_id: bytes
    namespace: str
    driver_address: str
    pid: int
    connected: bool
    def __init__(self, job_id: _Optional[bytes] = ..., namespace: _Optional[str] = ..., driver_address: _Optional[str] = ..., pid: _Optional[int] = ..., connected: _Optional[bool] = ...) -> None: ...

class JobList(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class FunctionEntry(_message.Message):
    __slots__ = ("function_id", "payload", "code_paths")
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CODE_PATHS_FIELD_NUMBER: _ClassVar[int]
    function_id: str
    payload: bytes
    code_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, function_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., code_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class FunctionKey(_message.Message):
    __slots__ = ("function_id",)
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    function_id: str
    def __init__(self, function_id: _Optional[str] = ...) -> None: ...

class PickNodeRequest(_message.Message):
    __slots__ = ("required", "exclude_node_id", "labels")
    class RequiredEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    required: _containers.ScalarMap[str, float]
    exclude_node_id: str
    labels: _containers.RepeatedCompositeFieldContainer[LabelSelector]
    def __init__(self, required: _Optional[_Mapping[str, float]] = ..., exclude_node_id: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[LabelSelector, _Mapping]]] = ...) -> None: ...

class PickNodeReply(_message.Message):
    __slots__ = ("found", "node", "feasible", "excluded_matches")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_MATCHES_FIELD_NUMBER: _ClassVar[int]
    found: bool
    node: NodeInfo
    feasible: bool
    excluded_matches: bool
    def __init__(self, found: _Optional[bool] = ..., node: _Optional[_Union[NodeInfo, _Mapping]] = ..., feasible: _Optional[bool] = ..., excluded_matches: _Optional[bool] = ...) -> None: ...

class WatchClusterRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterChange(_message.Message):
    __slots__ = ("initial", "keepalive", "scaling", "actors")
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_FIELD_NUMBER: _ClassVar[int]
    SCALING_FIELD_NUMBER: _ClassVar[int]
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    initial: bool
    keepalive: bool
    scaling: bool
    actors: _containers.RepeatedCompositeFieldContainer[ActorName]
    def __init__(self, initial: _Optional[bool] = ..., keepalive: _Optional[bool] = ..., scaling: _Optional[bool] = ..., actors: _Optional[_Iterable[_Union[ActorName, _Mapping]]] = ...) -> None: ...

class ActorName(_message.Message):
    __slots__ = ("namespace", "name")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ClusterDemand(_message.Message):
    __slots__ = ("pending", "placement_groups", "requested", "nodes")
    PENDING_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUPS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    pending: _containers.RepeatedCompositeFieldContainer[ResourceDemand]
    placement_groups: _containers.RepeatedCompositeFieldContainer[PlacementGroupDemand]
    requested: _containers.RepeatedCompositeFieldContainer[ResourceDemand]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeUsage]
    def __init__(self, pending: _Optional[_Iterable[_Union[ResourceDemand, _Mapping]]] = ..., placement_groups: _Optional[_Iterable[_Union[PlacementGroupDemand, _Mapping]]] = ..., requested: _Optional[_Iterable[_Union[ResourceDemand, _Mapping]]] = ..., nodes: _Optional[_Iterable[_Union[NodeUsage, _Mapping]]] = ...) -> None: ...

class PlacementGroupDemand(_message.Message):
    __slots__ = ("placement_group_id", "strategy", "bundles")
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    placement_group_id: bytes
    strategy: str
    bundles: _containers.RepeatedCompositeFieldContainer[Bundle]
    def __init__(self, placement_group_id: _Optional[bytes] = ..., strategy: _Optional[str] = ..., bundles: _Optional[_Iterable[_Union[Bundle, _Mapping]]] = ...) -> None: ...

class NodeUsage(_message.Message):
    __slots__ = ("node_id", "ip", "total", "available", "idle_s", "draining")
    class TotalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class AvailableEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    IDLE_S_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    ip: str
    total: _containers.ScalarMap[str, float]
    available: _containers.ScalarMap[str, float]
    idle_s: float
    draining: bool
    def __init__(self, node_id: _Optional[str] = ..., ip: _Optional[str] = ..., total: _Optional[_Mapping[str, float]] = ..., available: _Optional[_Mapping[str, float]] = ..., idle_s: _Optional[float] = ..., draining: _Optional[bool] = ...) -> None: ...

class ResourceRequest(_message.Message):
    __slots__ = ("bundles",)
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    bundles: _containers.RepeatedCompositeFieldContainer[ResourceDemand]
    def __init__(self, bundles: _Optional[_Iterable[_Union[ResourceDemand, _Mapping]]] = ...) -> None: ...

class DrainNodeRequest(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DrainNodeReply(_message.Message):
    __slots__ = ("accepted", "message")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message: str
    def __init__(self, accepted: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class CheckpointStoreReply(_message.Message):
    __slots__ = ("redis_address", "redis_password", "key_prefix")
    REDIS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REDIS_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    redis_address: str
    redis_password: str
    key_prefix: str
    def __init__(self, redis_address: _Optional[str] = ..., redis_password: _Optional[str] = ..., key_prefix: _Optional[str] = ...) -> None: ...

class LeaseRequest(_message.Message):
    __slots__ = ("required", "job_id", "allow_spillback", "owner_address", "queue_if_busy", "report_infeasible", "runtime_env", "labels")
    class RequiredEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SPILLBACK_FIELD_NUMBER: _ClassVar[int]
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_IF_BUSY_FIELD_NUMBER: _ClassVar[int]
    REPORT_INFEASIBLE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_ENV_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    required: _containers.ScalarMap[str, float]
    job_id: bytes
    allow_spillback: bool
    owner_address: str
    queue_if_busy: bool
    report_infeasible: bool
    runtime_env: str
    labels: _containers.RepeatedCompositeFieldContainer[LabelSelector]
    def __init__(self, required: _Optional[_Mapping[str, float]] = ..., job_id: _Optional[bytes] = ..., allow_spillback: _Optional[bool] = ..., owner_address: _Optional[str] = ..., queue_if_busy: _Optional[bool] = ..., report_infeasible: _Optional[bool] = ..., runtime_env: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[LabelSelector, _Mapping]]] = ...) -> None: ...

class LeaseReply(_message.Message):
    __slots__ = ("granted", "worker_address", "worker_id", "spillback_address", "gpu_ids", "infeasible", "message", "runtime_env_error", "placement_group_removed", "worker_data_port")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    WORKER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SPILLBACK_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GPU_IDS_FIELD_NUMBER: _ClassVar[int]
    INFEASIBLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_ENV_ERROR_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_REMOVED_FIELD_NUMBER: _ClassVar[int]
    WORKER_DATA_PORT_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    worker_address: str
    worker_id: bytes
    spillback_address: str
    gpu_ids: _containers.RepeatedScalarFieldContainer[int]
    infeasible: bool
    message: str
    runtime_env_error: str
    placement_group_removed: bool
    worker_data_port: int
    def __init__(self, granted: _Optional[bool] = ..., worker_address: _Optional[str] = ..., worker_id: _Optional[bytes] = ..., spillback_address: _Optional[str] = ..., gpu_ids: _Optional[_Iterable[int]] = ..., infeasible: _Optional[bool] = ..., message: _Optional[str] = ..., runtime_env_error: _Optional[str] = ..., placement_group_removed: _Optional[bool] = ..., worker_data_port: _Optional[int] = ...) -> None: ...

class StartActorReply(_message.Message):
    __slots__ = ("started", "no_resources", "address", "pid", "worker_id", "error", "message", "runtime_env_failed", "worker_died", "data_port")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    NO_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_ENV_FAILED_FIELD_NUMBER: _ClassVar[int]
    WORKER_DIED_FIELD_NUMBER: _ClassVar[int]
    DATA_PORT_FIELD_NUMBER: _ClassVar[int]
    started: bool
    no_resources: bool
    address: str
    pid: int
    worker_id: bytes
    error: Value
    message: str
    runtime_env_failed: bool
    worker_died: bool
    data_port: int
    def __init__(self, started: _Optional[bool] = ..., no_resources: _Optional[bool] = ..., address: _Optional[str] = ..., pid: _Optional[int] = ..., worker_id: _Optional[bytes] = ..., error: _Optional[_Union[Value, _Mapping]] = ..., message: _Optional[str] = ..., runtime_env_failed: _Optional[bool] = ..., worker_died: _Optional[bool] = ..., data_port: _Optional[int] = ...) -> None: ...

class KillWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "actor_id", "reason", "intentional")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    INTENTIONAL_FIELD_NUMBER: _ClassVar[int]
    worker_id: bytes
    actor_id: bytes
    reason: str
    intentional: bool
    def __init__(self, worker_id: _Optional[bytes] = ..., actor_id: _Optional[bytes] = ..., reason: _Optional[str] = ..., intentional: _Optional[bool] = ...) -> None: ...

class RegisterWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "address", "pid", "data_port")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    DATA_PORT_FIELD_NUMBER: _ClassVar[int]
    worker_id: bytes
    address: str
    pid: int
    data_port: int
    def __init__(self, worker_id: _Optional[bytes] = ..., address: _Optional[str] = ..., pid: _Optional[int] = ..., data_port: _Optional[int] = ...) -> None: ...

class WorkerIdleRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: bytes
    def __init__(self, worker_id: _Optional[bytes] = ...) -> None: ...

class BlockedRequest(_message.Message):
    __slots__ = ("worker_id", "blocked")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    worker_id: bytes
    blocked: bool
    def __init__(self, worker_id: _Optional[bytes] = ..., blocked: _Optional[bool] = ...) -> None: ...

class NodeAgentStats(_message.Message):
    __slots__ = ("rpcs_served", "lease_s", "monotonic_s", "node_lease_renewals")
    class RpcsServedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RPCS_SERVED_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    MONOTONIC_S_FIELD_NUMBER: _ClassVar[int]
    NODE_LEASE_RENEWALS_FIELD_NUMBER: _ClassVar[int]
    rpcs_served: _containers.ScalarMap[str, int]
    lease_s: float
    monotonic_s: float
    node_lease_renewals: int
    def __init__(self, rpcs_served: _Optional[_Mapping[str, int]] = ..., lease_s: _Optional[float] = ..., monotonic_s: _Optional[float] = ..., node_lease_renewals: _Optional[int] = ...) -> None: ...

class FetchObjectRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class ObjectChunk(_message.Message):
    __slots__ = ("data", "total", "name")
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    total: int
    name: str
    def __init__(self, data: _Optional[bytes] = ..., total: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class FreeObjectsRequest(_message.Message):
    __slots__ = ("paths",)
    PATHS_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, paths: _Optional[_Iterable[str]] = ...) -> None: ...

class GetObjectsRequest(_message.Message):
    __slots__ = ("object_ids", "timeout_s")
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    object_ids: _containers.RepeatedScalarFieldContainer[bytes]
    timeout_s: float
    def __init__(self, object_ids: _Optional[_Iterable[bytes]] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class GetObjectsReply(_message.Message):
    __slots__ = ("object_ids", "values")
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    object_ids: _containers.RepeatedScalarFieldContainer[bytes]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, object_ids: _Optional[_Iterable[bytes]] = ..., values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class BorrowUpdate(_message.Message):
    __slots__ = ("seq", "add", "remove", "unpin")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ADD_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    UNPIN_FIELD_NUMBER: _ClassVar[int]
    seq: int
    add: _containers.RepeatedScalarFieldContainer[bytes]
    remove: _containers.RepeatedScalarFieldContainer[bytes]
    unpin: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, seq: _Optional[int] = ..., add: _Optional[_Iterable[bytes]] = ..., remove: _Optional[_Iterable[bytes]] = ..., unpin: _Optional[_Iterable[bytes]] = ...) -> None: ...

class BorrowAck(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("task_id", "force", "recursive")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    force: bool
    recursive: bool
    def __init__(self, task_id: _Optional[bytes] = ..., force: _Optional[bool] = ..., recursive: _Optional[bool] = ...) -> None: ...

class StartActorRequest(_message.Message):
    __slots__ = ("spec", "gpu_ids", "num_restarts", "actor_class")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    GPU_IDS_FIELD_NUMBER: _ClassVar[int]
    NUM_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_CLASS_FIELD_NUMBER: _ClassVar[int]
    spec: ActorSpec
    gpu_ids: _containers.RepeatedScalarFieldContainer[int]
    num_restarts: int
    actor_class: FunctionEntry
    def __init__(self, spec: _Optional[_Union[ActorSpec, _Mapping]] = ..., gpu_ids: _Optional[_Iterable[int]] = ..., num_restarts: _Optional[int] = ..., actor_class: _Optional[_Union[FunctionEntry, _Mapping]] = ...) -> None: ...

class LeaseStateReply(_message.Message):
    __slots__ = ("streams", "running", "idle_s")
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    IDLE_S_FIELD_NUMBER: _ClassVar[int]
    streams: int
    running: int
    idle_s: float
    def __init__(self, streams: _Optional[int] = ..., running: _Optional[int] = ..., idle_s: _Optional[float] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ("client_version",)
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    client_version: str
    def __init__(self, client_version: _Optional[str] = ...) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("server_version", "cluster_id", "head_address", "owner_address", "frame_relay_port")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FRAME_RELAY_PORT_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    cluster_id: str
    head_address: str
    owner_address: str
    frame_relay_port: int
    def __init__(self, server_version: _Optional[str] = ..., cluster_id: _Optional[str] = ..., head_address: _Optional[str] = ..., owner_address: _Optional[str] = ..., frame_relay_port: _Optional[int] = ...) -> None: ...

class PublishObjectsRequest(_message.Message):
    __slots__ = ("object_ids", "values", "job_id")
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    object_ids: _containers.RepeatedScalarFieldContainer[bytes]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    job_id: bytes
    def __init__(self, object_ids: _Optional[_Iterable[bytes]] = ..., values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., job_id: _Optional[bytes] = ...) -> None: ...

class Package(_message.Message):
    __slots__ = ("uri", "data")
    URI_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    uri: str
    data: bytes
    def __init__(self, uri: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class PackageKey(_message.Message):
    __slots__ = ("uri",)
    URI_FIELD_NUMBER: _ClassVar[int]
    uri: str
    def __init__(self, uri: _Optional[str] = ...) -> None: ...

class HasPackageReply(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: _Optional[bool] = ...) -> None: ...

class PlacementGroupRef(_message.Message):
    __slots__ = ("placement_group_id", "bundle_index", "capture_child_tasks")
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_CHILD_TASKS_FIELD_NUMBER: _ClassVar[int]
    placement_group_id: bytes
    bundle_index: int
    capture_child_tasks: bool
    def __init__(self, placement_group_id: _Optional[bytes] = ..., bundle_index: _Optional[int] = ..., capture_child_tasks: _Optional[bool] = ...) -> None: ...

class Bundle(_message.Message):
    __slots__ = ("resources",)
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.ScalarMap[str, float]
    def __init__(self, resources: _Optional[_Mapping[str, float]] = ...) -> None: ...

class PlacementGroupSpec(_message.Message):
    __slots__ = ("placement_group_id", "name", "namespace", "bundles", "strategy", "detached", "job_id", "creator_actor_id", "bundle_labels")
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_LABELS_FIELD_NUMBER: _ClassVar[int]
    placement_group_id: bytes
    name: str
    namespace: str
    bundles: _containers.RepeatedCompositeFieldContainer[Bundle]
    strategy: str
    detached: bool
    job_id: bytes
    creator_actor_id: bytes
    bundle_labels: _containers.RepeatedCompositeFieldContainer[LabelSelector]
    def __init__(self, placement_group_id: _Optional[bytes] = ..., name: _Optional[str] = ..., namespace: _Optional[str] = ..., bundles: _Optional[_Iterable[_Union[Bundle, _Mapping]]] = ..., strategy: _Optional[str] = ..., detached: _Optional[bool] = ..., job_id: _Optional[bytes] = ..., creator_actor_id: _Optional[bytes] = ..., bundle_labels: _Optional[_Iterable[_Union[LabelSelector, _Mapping]]] = ...) -> None: ...

class PlacementGroupInfo(_message.Message):
    __slots__ = ("spec", "state", "bundle_nodes", "version", "pending_reason", "created_at")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_NODES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    spec: PlacementGroupSpec
    state: PlacementGroupState
    bundle_nodes: _containers.RepeatedScalarFieldContainer[str]
    version: int
    pending_reason: str
    created_at: float
    def __init__(self, spec: _Optional[_Union[PlacementGroupSpec, _Mapping]] = ..., state: _Optional[_Union[PlacementGroupState, str]] = ..., bundle_nodes: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ..., pending_reason: _Optional[str] = ..., created_at: _Optional[float] = ...) -> None: ...

class PlacementGroupRequest(_message.Message):
    __slots__ = ("placement_group_id", "name", "namespace", "after_version", "timeout_s")
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    placement_group_id: bytes
    name: str
    namespace: str
    after_version: int
    timeout_s: float
    def __init__(self, placement_group_id: _Optional[bytes] = ..., name: _Optional[str] = ..., namespace: _Optional[str] = ..., after_version: _Optional[int] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class PlacementGroupReply(_message.Message):
    __slots__ = ("found", "info")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    found: bool
    info: PlacementGroupInfo
    def __init__(self, found: _Optional[bool] = ..., info: _Optional[_Union[PlacementGroupInfo, _Mapping]] = ...) -> None: ...

class PlacementGroupList(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[PlacementGroupInfo]
    def __init__(self, groups: _Optional[_Iterable[_Union[PlacementGroupInfo, _Mapping]]] = ...) -> None: ...

class BundleReservation(_message.Message):
    __slots__ = ("placement_group_id", "indexes", "bundles")
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    placement_group_id: bytes
    indexes: _containers.RepeatedScalarFieldContainer[int]
    bundles: _containers.RepeatedCompositeFieldContainer[Bundle]
    def __init__(self, placement_group_id: _Optional[bytes] = ..., indexes: _Optional[_Iterable[int]] = ..., bundles: _Optional[_Iterable[_Union[Bundle, _Mapping]]] = ...) -> None: ...

class ReserveBundlesReply(_message.Message):
    __slots__ = ("reserved", "message")
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reserved: bool
    message: str
    def __init__(self, reserved: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...
