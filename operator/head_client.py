"""The operator's client of a cluster's head (the GCS server): an actor's live state, nodes, kills.

The operator reads the live GCS state so DetachedActor.status mirrors it, and kills the
GCS entry when it gives up on an actor, so callers holding handles get ActorDiedError.
"""

from __future__ import annotations

import threading

import grpc
from kastor.runtime import auth, tls
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc

TIMEOUT_S = 5.0


class HeadClient:
    """Blocking calls to heads, one cached channel per address (safe from handler threads)."""

    def __init__(self) -> None:
        self._channels: dict[tuple[str, str | None], grpc.Channel] = {}
        self._lock = threading.Lock()

    def _stub(self, key: tuple[str, str | None]) -> pb_grpc.HeadStub:
        with self._lock:
            channel = self._channels.get(key)
            if channel is None:
                address, ca = key
                channel = self._channels[key] = grpc.insecure_channel(address) if ca is None else \
                    tls.channel_trusting(address, ca.encode())
        return pb_grpc.HeadStub(channel)

    def _forget(self, key: tuple[str, str | None]) -> None:
        """Drops a channel that failed: a recreated Service may resolve elsewhere now, and a
        fresh channel resolves again instead of backing off against the old address."""
        with self._lock:
            channel = self._channels.pop(key, None)
        if channel is not None:
            channel.close()

    def _call(self, address: str, method: str, request, token: str, ca: str | None):
        key = (address, ca)
        try:
            return getattr(self._stub(key), method)(request, metadata=auth.metadata(token), timeout=TIMEOUT_S)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._forget(key)
            raise

    def get_actor(self, address: str, token: str, *, actor_id: bytes = b"", name: str = "",
                  namespace: str = "", ca: str | None = None) -> pb.ActorInfo | None:
        """The actor's GCS record (by id, or by name among live actors); None if unknown."""
        reply = self._call(address, "GetActor", pb.GetActorRequest(actor_id=actor_id, name=name, namespace=namespace),
                           token, ca)
        return reply.info if reply.found else None

    def list_nodes(self, address: str, token: str, ca: str | None = None) -> list[pb.NodeInfo]:
        return list(self._call(address, "ListNodes", pb.ListRequest(), token, ca).nodes)

    def kill_actor(self, address: str, token: str, actor_id: bytes, reason: str, ca: str | None = None) -> None:
        self._call(address, "KillActor", pb.KillActorRequest(actor_id=actor_id, no_restart=True, reason=reason),
                   token, ca)

    def cluster_demand(self, address: str, token: str, ca: str | None = None) -> pb.ClusterDemand:
        """The work that does not fit, the standing request_resources() and the nodes' idleness (autoscaling)."""
        return self._call(address, "GetClusterDemand", pb.Empty(), token, ca)

    def drain_node(self, address: str, token: str, node_id: str, reason: str,
                   ca: str | None = None) -> pb.DrainNodeReply:
        """Asks the head to drain an idle node before its pod is deleted; refused while it runs anything."""
        return self._call(address, "DrainNode", pb.DrainNodeRequest(node_id=node_id, reason=reason), token, ca)

    def checkpoint_store(self, address: str, token: str, ca: str | None = None) -> pb.CheckpointStoreReply:
        """Where the cluster keeps durable actors' checkpoints (its Redis), for DetachedActor status."""
        return self._call(address, "GetCheckpointStore", pb.Empty(), token, ca)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


def head_ca(kube, namespace: str, spec) -> str | None:
    """The CA a TLS cluster's head is checked against (its TLS Secret's ca.crt); None without TLS."""
    if not spec.tls_secret:
        return None
    return (kube.get_secret(namespace, spec.tls_secret) or {}).get("ca.crt")
