"""gRPC plumbing shared by every Kastor process: channel options, one channel cache, servers.

The head, the node agents, the client gateway and each core worker talk to many peers; each
keeps one channel per address (a channel multiplexes every call to that peer), made with the
same options, so a restarted peer is reached again within a second.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from kastor.runtime import auth, config, tls

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", config.MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", config.MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 0),
    # Reconnect to a restarted peer (the head) within a second, not gRPC's default two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Despite its name, gRPC reads this as the least time one connection attempt may take (its
    # handshake deadline), not as a backoff. At 100 ms, a peer that was slow to send its first
    # frame (a loaded machine) failed the call with "timed out before receiving SETTINGS frame"
    # although it was alive: a new actor's first call, a worker's registration, StartActor.
    ("grpc.min_reconnect_backoff_ms", int(config.CONNECT_TIMEOUT_S * 1000)),
]


def bind_host(ip: str) -> str:
    """A loopback node IP is bound exactly (each emulated pod has its own 127.x address)."""
    if ip == "localhost":
        return "127.0.0.1"
    return ip if ip.startswith("127.") else "0.0.0.0"


def direct_channel(address: str) -> grpc.aio.Channel:
    """A channel straight to `address` (TLS when the cluster serves it), with Kastor's options."""
    return tls.aio_channel(address, CHANNEL_OPTIONS)


class ChannelCache:
    """One grpc.aio channel per address, made on first use (on the event loop that uses it).

    `connect` makes a new channel; by default a direct one. A remote client passes one that
    carries every call through the head's client port (see gateway_client)."""

    def __init__(self, connect: Callable[[str], grpc.aio.Channel] = direct_channel) -> None:
        self._connect = connect
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = self._connect(address)
        return ch

    def addresses(self) -> list[str]:
        """The addresses this cache holds a channel to (what a process has connected to)."""
        return list(self._channels)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            await ch.close()


def server(token: str, counter: CallCounter | None = None) -> grpc.aio.Server:
    """A server with Kastor's message limits that admits only calls carrying the cluster token;
    `counter` counts the calls it admits, by method."""
    return tls.server(CHANNEL_OPTIONS, [auth.TokenInterceptor(token), *([counter] if counter else [])])


class CallCounter(grpc.aio.ServerInterceptor):
    """Counts the calls a server admits, by method: what a process serves is then a number a
    test or an operator can read (a node agent's Stats), not a guess from its CPU time."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method.rsplit("/", 1)[-1]
        self._counts[method] = self._counts.get(method, 0) + 1
        return await continuation(handler_call_details)

    def counts(self) -> dict[str, int]:
        """Calls admitted so far, by method name (e.g. "RequestLease")."""
        return dict(self._counts)
