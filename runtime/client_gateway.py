"""The head's client port: one address through which a notebook outside the cluster works.

A driver outside the cluster network cannot reach pod IPs. Rather than re-implement the API
on the server (Ray Client's way: slow and version-fragile), the gateway forwards the driver's
ordinary Kastor calls, as opaque bytes, to the cluster address each names (`kastor-target`
metadata, or the channel's user agent, see gateway_client): the head, a node agent or a
worker. The client therefore runs the same CoreWorker as an in-cluster driver, with the same
semantics.

Actor calls do not take the gRPC relay when the client can use the frame relay beside it
(frame_relay.py, announced in Hello): the same frames as in the cluster, spliced to the
worker's data port without being decoded.

Safety: the token interceptor runs first, so nothing from an unauthenticated peer is parsed or
forwarded; the gateway never unpickles anything (it does not even parse the forwarded
protobufs); and it only forwards to the head and to hosts of registered nodes, so it is not an
open proxy into the cluster network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
from kastor.runtime import auth, rpc, settings, tls
from kastor.runtime.client_objects import ObjectDirectory
from kastor.runtime.config import TARGET_METADATA_KEY, TARGET_USER_AGENT_PREFIX
from kastor.runtime.frame_relay import FrameRelay
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.rpc import ChannelCache

log = logging.getLogger("kastor.gateway")

VERSION = "0.1"  # wire compatibility: client and cluster must agree on major.minor


def _identity(b: bytes) -> bytes:
    return b


def _method_kinds() -> dict[str, tuple[bool, bool]]:
    """Full method path -> (client streams, server streams), for every forwardable service."""
    kinds = {}
    for service in pb.DESCRIPTOR.services_by_name.values():
        if service.name == "ClientGateway":
            continue
        for m in service.methods:
            kinds[f"/{pb.DESCRIPTOR.package}.{service.name}/{m.name}"] = (m.client_streaming, m.server_streaming)
    return kinds


_GET_OBJECTS = f"/{pb.DESCRIPTOR.package}.CoreWorker/GetObjects"


def _target(metadata: dict) -> str:
    """The cluster address a relayed call is for; empty for calls addressed to the gateway itself."""
    if metadata.get(TARGET_METADATA_KEY):
        return metadata[TARGET_METADATA_KEY]
    first = metadata.get("user-agent", "").split(" ", 1)[0]
    return first.removeprefix(TARGET_USER_AGENT_PREFIX) if first.startswith(TARGET_USER_AGENT_PREFIX) else ""


class Forwarder(grpc.GenericRpcHandler):
    """Relays any Kastor RPC to the target in its metadata, bytes in and bytes out."""

    def __init__(self, token: str, head_address: str, allowed_host: Callable[[str], bool],
                 directory: ObjectDirectory):
        self._directory = directory
        self._metadata = auth.metadata(token)
        self._head_address = head_address
        self._allowed_host = allowed_host
        self._kinds = _method_kinds()
        self._channels = ChannelCache()
        self.relay: FrameRelay | None = None  # the frame relay served beside (start), closed with this

    def service(self, details):
        kind = self._kinds.get(details.method)
        if kind is None:
            return None  # UNIMPLEMENTED
        if details.method == _GET_OBJECTS and not _target(dict(details.invocation_metadata or ())):
            # From inside the cluster, to the gateway as the owner of a remote client's objects.
            return grpc.unary_unary_rpc_method_handler(
                self._directory.get_objects, pb.GetObjectsRequest.FromString, pb.GetObjectsReply.SerializeToString)
        client_streams, server_streams = kind
        method = details.method
        if client_streams and server_streams:
            relay, make = self._relay_stream(method, "stream_stream"), grpc.stream_stream_rpc_method_handler
        elif client_streams:
            relay, make = self._relay_unary(method, "stream_unary"), grpc.stream_unary_rpc_method_handler
        elif server_streams:
            relay, make = self._relay_stream(method, "unary_stream"), grpc.unary_stream_rpc_method_handler
        else:
            relay, make = self._relay_unary(method, "unary_unary"), grpc.unary_unary_rpc_method_handler
        return make(relay, _identity, _identity)

    async def _channel(self, context) -> grpc.aio.Channel:
        target = _target(dict(context.invocation_metadata())) or self._head_address
        if target != self._head_address and not self._allowed_host(target.rsplit(":", 1)[0]):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{target} is not an address of this cluster's head or nodes")
        return self._channels.get(target)

    def _relay_unary(self, method: str, kind: str):
        """A relay for calls answered by one message (`kind`: unary_unary or stream_unary)."""
        async def relay(request, context):
            ch = await self._channel(context)
            call = getattr(ch, kind)(method, request_serializer=_identity, response_deserializer=_identity)
            try:
                reply_call = call(request, metadata=self._metadata, timeout=context.time_remaining())
                reply = await reply_call
                # Trailers are relayed too: a worker's LeaseState names its data port in them,
                # which the client's frame relay route needs (frame_stream.data_port_of).
                context.set_trailing_metadata(await reply_call.trailing_metadata() or ())
                return reply
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details())
        return relay

    def _relay_stream(self, method: str, kind: str):
        """A relay for calls answered by a stream (`kind`: unary_stream or stream_stream)."""
        async def relay(request, context):
            ch = await self._channel(context)
            call = getattr(ch, kind)(method, request_serializer=_identity, response_deserializer=_identity)(
                request, metadata=self._metadata, timeout=context.time_remaining())
            try:
                # Headers are relayed as they come, so a caller waiting for the worker to accept a
                # stream (exec_stream) sees it accepted only once the worker did.
                await context.send_initial_metadata(await call.initial_metadata() or ())
                async for reply in call:
                    yield reply
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details())
            finally:
                call.cancel()  # the client went away: so must the call it made (e.g. its job session)
        return relay

    async def close(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
        await self._channels.close()


class Greeter(pb_grpc.ClientGatewayServicer):
    """Tells a connecting client what it talks to, so version skew fails clearly and early."""

    def __init__(self, cluster_id: str, head_address: str, owner_address: str, directory: ObjectDirectory,
                 frame_relay_port: int = 0):
        self._frame_relay_port = frame_relay_port
        self._cluster_id = cluster_id
        self._head_address = head_address
        self._owner_address = owner_address
        self._directory = directory

    async def Hello(self, request, context):
        return pb.HelloReply(server_version=VERSION, cluster_id=self._cluster_id, head_address=self._head_address,
                             owner_address=self._owner_address, frame_relay_port=self._frame_relay_port)

    async def PublishObjects(self, request, context):
        self._directory.publish(request.job_id, request.object_ids, request.values)
        return pb.Empty()


def compatible(client: str, server: str) -> bool:
    return client.split(".")[:2] == server.split(".")[:2]


async def start(port: int, host: str, advertise_ip: str, token: str, head_address: str, cluster_id: str,
                allowed_host: Callable[[str], bool], directory: ObjectDirectory,
                ) -> tuple[grpc.aio.Server, Forwarder, int]:
    """Serves the client port beside the head; returns (server, forwarder, bound port)."""
    forwarder = Forwarder(token, head_address, allowed_host, directory)
    server = rpc.server(token)
    bound = tls.add_port(server, f"{host}:{port}", "client port (kastor://)",
                         "Choose another with --client-port / KASTOR_CLIENT_PORT (0: any free port, -1: none).")
    relay_port = settings.FRAME_RELAY_PORT.get()
    if relay_port >= 0:
        forwarder.relay = FrameRelay(token, cluster_id, allowed_host)
        try:
            relay_port = await forwarder.relay.start(host, relay_port)
        except OSError as e:
            await server.stop(None)
            raise tls.PortInUseError(tls.port_in_use_message(
                f"{host}:{relay_port}", "client port's frame relay",
                f"Choose another with {settings.FRAME_RELAY_PORT.name} (0: any free port, -1: none).",
                str(e))) from None
    else:
        relay_port = 0
    pb_grpc.add_ClientGatewayServicer_to_server(
        Greeter(cluster_id, head_address, f"{advertise_ip}:{bound}", directory, relay_port), server)
    server.add_generic_rpc_handlers((forwarder,))
    await server.start()
    log.info("client port serving on %s:%d (forwarding to %s and its nodes; frame relay on port %d)",
             host, bound, head_address, relay_port)
    return server, forwarder, bound

