"""What the operator asks a cluster's head (GCS): an actor's live state, and to kill one.

The operator reads the live GCS state so DetachedActor.status mirrors it, and kills the
GCS entry when it gives up on an actor, so callers holding handles get ActorDiedError.
"""

from __future__ import annotations

import threading

import grpc
from kastor.runtime import auth
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc

TIMEOUT_S = 5.0


class Gcs:
    """Blocking calls to heads, one cached channel per address (safe from handler threads)."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def _stub(self, address: str) -> pb_grpc.HeadStub:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = grpc.insecure_channel(address)
        return pb_grpc.HeadStub(channel)

    def _forget(self, address: str) -> None:
        """Drops a channel that failed: a recreated Service may resolve elsewhere now, and a
        fresh channel resolves again instead of backing off against the old address."""
        with self._lock:
            channel = self._channels.pop(address, None)
        if channel is not None:
            channel.close()

    def _call(self, address: str, method: str, request, token: str):
        try:
            return getattr(self._stub(address), method)(request, metadata=auth.metadata(token), timeout=TIMEOUT_S)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._forget(address)
            raise

    def get_actor(self, address: str, token: str, *, actor_id: bytes = b"", name: str = "",
                  namespace: str = "") -> pb.ActorInfo | None:
        """The actor's GCS record (by id, or by name among live actors); None if unknown."""
        reply = self._call(address, "GetActor", pb.GetActorRequest(actor_id=actor_id, name=name, namespace=namespace),
                           token)
        return reply.info if reply.found else None

    def list_nodes(self, address: str, token: str) -> list[pb.NodeInfo]:
        return list(self._call(address, "ListNodes", pb.ListRequest(), token).nodes)

    def kill_actor(self, address: str, token: str, actor_id: bytes, reason: str) -> None:
        self._call(address, "KillActor", pb.KillActorRequest(actor_id=actor_id, no_restart=True, reason=reason), token)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
