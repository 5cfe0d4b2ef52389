"""Named actors and this node's address, as `ray.util` offers them."""

from __future__ import annotations

from typing import Any

import grpc
from kastor.exceptions import GetTimeoutError
from kastor.runtime import config
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.session import current_core


def list_named_actors(all_namespaces: bool = False) -> list[str] | list[dict[str, Any]]:
    """Names of the live named actors in this job's namespace; with `all_namespaces`,
    `{"name", "namespace"}` dicts from every namespace (Ray's shapes for both)."""

    core = current_core()
    timeout = config.gcs_request_timeout_s()
    try:
        reply = core.head_call("ListActors", pb.ListRequest(), timeout=timeout)
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
        raise GetTimeoutError(f"list_named_actors(): the head did not answer within {timeout:g}s "
                              f"(KASTOR_GCS_REQUEST_TIMEOUT_S). It may be overloaded or stopped.") from None
    live = [a.spec for a in reply.actors if a.spec.name and a.state != pb.DEAD]
    if all_namespaces:
        return [{"name": spec.name, "namespace": spec.namespace} for spec in live]
    namespace = core.current_namespace()
    return [spec.name for spec in live if spec.namespace == namespace]


def get_node_ip_address() -> str:
    """The address other processes of the cluster reach this one's node on."""

    return current_core().ip
