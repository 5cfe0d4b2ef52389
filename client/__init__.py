"""Kastor: Ray-core-compatible actors and tasks, native to Kubernetes.

`import kastor as ray` runs a program written for Ray core's tasks and actors. With no
address, `kastor.init()` starts an embedded single-machine cluster of real processes.
"""

from kastor import actor, cloudpickle, dag, exceptions, job_config, state, util
from kastor.actor import ActorClass, ActorHandle, method
from kastor.api import (
    ClusterInfo,
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_actor,
    get_gpu_ids,
    get_runtime_context,
    init,
    is_initialized,
    kill,
    nodes,
    put,
    remote,
    shutdown,
    timeline,
    wait,
)
from kastor.object_ref import ObjectRef
from kastor.object_ref_generator import ObjectRefGenerator
from kastor.remote_function import RemoteFunction
from kastor.runtime import __version__  # defined once, in the runtime

ObjectID = ObjectRef  # Ray's older name for an ObjectRef

__all__ = [
    "ActorClass", "ActorHandle", "ClusterInfo", "ObjectID", "ObjectRef", "ObjectRefGenerator", "RemoteFunction",
    "actor", "dag",
    "available_resources", "cancel", "cloudpickle", "cluster_resources", "exceptions", "get", "get_actor",
    "get_gpu_ids",
    "get_runtime_context", "init", "is_initialized", "job_config", "kill", "method", "nodes", "put", "remote",
    "shutdown",
    "state", "timeline", "util", "wait", "__version__",
]
