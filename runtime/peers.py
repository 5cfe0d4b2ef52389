"""How a driver or worker reaches the other processes: one channel cache, stubs on it, the
cluster token, and the head's retrying call.

The core owns one `Peers` and hands it to its submitters, so they reach other processes
without holding the core. Two addresses change after it is made, and are read here at call
time: this process's own (`address`, known once its server is bound, or the one the client
port assigned to a remote client) and its node agent's (`node_address`, which a remote client
learns from the head after it connected).
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from kastor.runtime import head_link
from kastor.runtime.frames import RelayRoute
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.rpc import ChannelCache

log = logging.getLogger("kastor.peers")


class Peers:
    """Channels and stubs to the head, the node agents and the workers, made with one cache."""

    def __init__(self, channels: ChannelCache, metadata: tuple[tuple[str, str], ...], head_address: str,
                 node_address: str, token: str = "", framed_calls: bool = False) -> None:
        """`framed_calls`: actor calls may go to a worker's data port as frames (runtime/frames.py),
        which needs a direct route to it (not a remote client's); `token` opens those connections."""
        self.metadata = metadata  # the cluster token, for every call
        self.token = token
        self.framed_calls = framed_calls
        # A remote client's route to data ports: the client port's frame relay (set once connected).
        self.frame_relay: RelayRoute | None = None
        self.head_address = head_address
        self.node_address = node_address  # the node agent that grants leases and stores large values
        self.address = ""  # this process's owner address: results and borrowers come back to it
        self._channels = channels

    def use_frame_relay(self, route: RelayRoute | None) -> None:
        """A remote client's calls go to data ports through `route` from now on (None: through the
        client port's gRPC relay). Set at connect, and again once a restarted head is back, as
        its relay may listen on another port."""
        if route != self.frame_relay:
            log.info("actor calls go %s", f"as frames through the relay at {route.address}" if route
                     else "through the client port's gRPC relay")
        self.frame_relay = route

    def drop_frame_relay(self, reason: str) -> None:
        """A remote client's calls go back to the client port's gRPC relay for good: the frame
        relay failed (its port not exposed where the client is, e.g. behind a port-forward or
        a Service that carries only the client port; or the head restarted on another one)."""
        if self.frame_relay is not None:
            log.warning("%s; actor calls go through the client port's gRPC relay from now on (slower)", reason)
            self.frame_relay = None

    def channel(self, address: str) -> grpc.aio.Channel:
        """The one channel to `address` (made on first use, on the core's loop)."""
        return self._channels.get(address)

    def channel_addresses(self) -> list[str]:
        """The addresses this process holds a gRPC channel to."""
        return self._channels.addresses()

    def head_stub(self) -> pb_grpc.HeadStub:
        return pb_grpc.HeadStub(self.channel(self.head_address))

    def node_stub(self, address: str | None = None) -> pb_grpc.NodeAgentStub:
        """A node agent's stub; this process's own node agent by default."""
        return pb_grpc.NodeAgentStub(self.channel(address or self.node_address))

    def worker_stub(self, address: str) -> pb_grpc.CoreWorkerStub:
        return pb_grpc.CoreWorkerStub(self.channel(address))

    async def head_rpc(self, method: str, request: Any, timeout: float | None = 60) -> Any:
        """A call to the head that waits through a head restart (see head_link)."""
        return await head_link.call(getattr(self.head_stub(), method), request, metadata=self.metadata,
                                    address=self.head_address, timeout=timeout)

    async def close(self) -> None:
        """Closes every channel (the core's shutdown)."""
        await self._channels.close()
