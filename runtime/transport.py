"""How a core worker reaches the cluster, chosen once when it starts.

Inside the cluster network (workers, and drivers there) a process talks to every peer
directly, peers reach it back, and it writes large values to its node's store; a driver with
no node of its own (a driver pod) writes them to its own folder and serves them itself
(driver_store.py). A remote
client (`kastor://`, e.g. a notebook) reaches the cluster only through the head's client
port: every channel is carried by it, large values are uploaded to a node's store, and the
values of refs it hands out are given to the client port to serve, since no worker can reach
the client itself. The rest of the core does not ask which of the two it is.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from typing import TYPE_CHECKING

import grpc
from kastor.runtime import (
    client_copies,
    config,
    exceptions,
    gateway_client,
    lazy_puts,
    relay_upload,
    serialization,
    settings,
    spilling,
    store_recycle,
)
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.rpc import CHANNEL_OPTIONS, direct_channel
from kastor.runtime.upload_server import UPLOAD_PORT_METADATA_KEY

if TYPE_CHECKING:  # the core hands itself in: importing it here would be a cycle
    from kastor.runtime.core import CoreWorker

log = logging.getLogger("kastor.transport")


class DirectTransport:
    """A process inside the cluster network."""

    # Whether workers can call this process back (e.g. to report a generator's items one by one).
    reachable = True

    def __init__(self, serves_own_store: bool = False) -> None:
        # True for a driver without a node of its own: its store is served on its own address.
        self.serves_own_store = serves_own_store

    def connect(self, address: str) -> grpc.aio.Channel:
        return direct_channel(address)

    def store_large(self, core: CoreWorker, ser: serialization.Serialized, name: str,
                    owner: str) -> pb.ObjectLocation:
        """Writes a value too large to inline into this node's store (or the driver's own, which
        readers then fetch from the driver's address), under its owner's directory there
        (freed by the node if the owner dies without freeing it). One that does not fit goes
        to the node's spill directory on disk instead (spilling)."""
        path, size = spilling.write(ser, core.store_dir, owner, name, core.recycle_pool)
        served_by = core.address if self.serves_own_store else core.node_address
        return pb.ObjectLocation(node_id=core.node_id, node_address=served_by, path=path, size=size)

    def store_put(self, core: CoreWorker, ser: serialization.Serialized, object_id: bytes,
                  owner: str) -> pb.ObjectLocation:
        """A put()'s large value: stored at once (store_large)."""
        return self.store_large(core, ser, object_id.hex(), owner)

    def upload_deferred(self, core: CoreWorker, object_id: bytes) -> None:
        """A ref this process owns is about to leave it: its value is where others can read it."""

    def free_local(self, path: str) -> bool:
        """Whether `path` was a remote client's put never uploaded (GatewayTransport), now deleted."""
        return False

    def on_escaped(self, core: CoreWorker, object_id: bytes) -> None:
        """A ref this process owns was handed to another process; its owner serves it from here."""

    def local_copy(self, node_path: str) -> str | None:
        """A copy, on this host, of the stored value at `node_path` (GatewayTransport)."""
        return None

    def forget_copy(self, node_path: str) -> None:
        """The value at `node_path` was freed: so is any local copy of it."""

    async def close(self) -> None:
        pass


class GatewayTransport:
    """A remote client, behind the head's client port at `gateway`."""

    reachable = False
    serves_own_store = False  # its large values are uploaded to a node (store_large)

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self._own_channel: grpc.aio.Channel | None = None
        # The large values this client uploaded, also kept on its own disk: a get of its own
        # put reads them here (mapped, as in the cluster) instead of downloading them back.
        # Node path -> local path; written by putting threads, read by getting ones.
        self._copies: dict[str, str] = {}
        self._copies_dir = ""
        self._copy_pool: store_recycle.RecyclePool | None = None  # freed copies, reused for the next (store_recycle)
        self._copier: concurrent.futures.ThreadPoolExecutor | None = None
        self._raw_uploads = True  # until the raw route fails once (relay_upload.py)
        self._upload_ports: dict[str, int] = {}  # node agent address -> its upload port (0: none)
        # Puts kept only on this disk until the cluster needs them (lazy_puts.py); None: off.
        self._lazy = lazy_puts.LazyPuts() if settings.CLIENT_LAZY_PUT.get() else None

    def connect(self, address: str) -> grpc.aio.Channel:
        return gateway_client.channel(self.gateway, address, CHANNEL_OPTIONS)

    def store_large(self, core: CoreWorker, ser: serialization.Serialized, name: str,
                    owner: str) -> pb.ObjectLocation:
        """Uploads through the node agent (the client cannot write the node's store); the
        client port's job ending frees what the client owns. The local copy is written while
        the upload runs on the core's loop; a copy that cannot be written (a full disk) is
        just not kept."""
        if self._copier is None:
            self._copier = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kastor-client-copy")
        copy = self._copier.submit(self._write_copy, ser, name)
        try:
            loc = self._upload_now(core, ser, name)
        except BaseException:
            _unlink(copy.result())
            raise
        local = copy.result()
        if local:
            self._copies[loc.path] = local
        return loc

    def store_put(self, core: CoreWorker, ser: serialization.Serialized, object_id: bytes,
                  owner: str) -> pb.ObjectLocation:
        """A put()'s large value: only the local copy is written, and stands as its location
        (on this client's own node id) until the cluster needs the value (lazy_puts.py). One
        whose copy cannot be written is uploaded now."""
        if self._lazy is None:
            return self.store_large(core, ser, object_id.hex(), owner)
        local = self._write_copy(ser, object_id.hex())
        if not local:
            return self._upload_now(core, ser, object_id.hex())
        self._lazy.add(object_id, local)
        return pb.ObjectLocation(node_id=core.node_id, path=local, size=ser.size)

    def upload_deferred(self, core: CoreWorker, object_id: bytes) -> None:
        """Uploads a put kept local so far (on this thread: a full store's ObjectStoreFullError
        reaches the submission that needed it), and records where it went."""
        if self._lazy is None or not self._lazy.pending(object_id):
            return

        def settle(oid: bytes, local: str, loc: pb.ObjectLocation) -> None:
            self._copies[loc.path] = local  # gets here keep reading the local copy
            core.objects.replace(oid, pb.Value(location=loc))
        try:
            self._lazy.upload(object_id, lambda frame, name: self._upload_now(core, frame, name), settle)
        except exceptions.ObjectStoreFullError as e:
            raise exceptions.ObjectStoreFullError(
                f"{e}. The value of put() stays on this client until the cluster first needs it (this "
                f"submission did): drop refs to objects you no longer need so the node frees them, or give the "
                f"node's store more room; KASTOR_CLIENT_LAZY_PUT=0 uploads at put() instead.") from None

    def free_local(self, path: str) -> bool:
        if self._lazy is None or not self._lazy.discard(path):
            return False
        if self._copy_pool is None or not self._copy_pool.keep(path):
            _unlink(path)
        return True

    def _upload_now(self, core: CoreWorker, frame: relay_upload.Frame, name: str) -> pb.ObjectLocation:
        loc = self._raw_upload(core, frame, name)
        return loc if loc is not None else core.run(self._upload(core, frame, name))

    def _raw_upload(self, core: CoreWorker, ser: relay_upload.Frame, name: str) -> pb.ObjectLocation | None:
        """The value sent as raw bytes through the client port's frame relay to the node's upload
        port (relay_upload.py), or None when that route is not there (the caller uses gRPC)."""
        route = core.peers.frame_relay
        if route is None or not self._raw_uploads:
            return None
        node = core.node_address
        if node not in self._upload_ports:
            self._upload_ports[node] = core.run(_upload_port_of(core))
        port = self._upload_ports[node]
        if not port:
            return None
        try:
            return relay_upload.upload(route, core.token, f"{node.rpartition(':')[0]}:{port}", ser, name)
        except relay_upload.UploadRefused as e:
            raise exceptions.ObjectStoreFullError(
                f"Could not upload a {ser.size}-byte object to node {node}: {e}") from None
        except relay_upload.RelayUploadFailed as e:
            log.warning("%s; large values are uploaded through the client port's gRPC relay from now on "
                        "(slower)", e)
            self._raw_uploads = False
            return None

    def _write_copy(self, ser: serialization.Serialized, name: str) -> str:
        try:
            if not self._copies_dir:
                self._copies_dir = client_copies.make_dir(client_copies.root())
                if settings.STORE_RECYCLE.get():
                    pool_dir = os.path.join(self._copies_dir, store_recycle.POOL_DIR)
                    self._copy_pool = store_recycle.RecyclePool(self._copies_dir, lambda: pool_dir)
            if not client_copies.has_room(self._copies_dir, ser.size):
                return ""  # memory is shared with the rest of the machine (client_copies.py)
            path = os.path.join(self._copies_dir, name)
            if self._copy_pool is None or self._copy_pool.write(ser, path) is None:
                ser.write_file(path)
        except (OSError, exceptions.ObjectStoreFullError) as e:
            log.warning("not keeping a local copy of a %d-byte value (a get of it downloads it): %s", ser.size, e)
            return ""
        return path

    def local_copy(self, node_path: str) -> str | None:
        return self._copies.get(node_path)

    def forget_copy(self, node_path: str) -> None:
        local = self._copies.pop(node_path, "")
        if local and (self._copy_pool is None or not self._copy_pool.keep(local)):
            _unlink(local)

    async def _upload(self, core: CoreWorker, ser: relay_upload.Frame, name: str) -> pb.ObjectLocation:
        def chunks():
            first = True
            for data in ser.iter_chunks(config.FETCH_CHUNK_BYTES):
                yield pb.ObjectChunk(data=data, total=ser.size, name=name if first else "")
                first = False
        try:
            return await core.node_stub().PutObject(chunks(), metadata=core.metadata)
        except grpc.aio.AioRpcError as e:
            raise exceptions.ObjectStoreFullError(
                f"Could not upload a {ser.size}-byte object to node {core.node_address}: {e.details()}") from None

    def on_escaped(self, core: CoreWorker, object_id: bytes) -> None:
        """The cluster cannot reach this process: give the value to the client port to serve.
        Called while pickling (no locks): the work is posted to the core's loop."""
        def publish(value: pb.Value) -> None:
            core.post(lambda: core.loop.create_task(self._publish(core, object_id, value)))
        core.post(lambda: core.store.on_ready(object_id, publish))

    async def _publish(self, core: CoreWorker, object_id: bytes, value: pb.Value) -> None:
        try:
            await pb_grpc.ClientGatewayStub(self._channel()).PublishObjects(
                pb.PublishObjectsRequest(object_ids=[object_id], values=[value], job_id=core.job_id),
                metadata=core.metadata, timeout=60)
        except grpc.aio.AioRpcError as e:
            log.warning("could not hand object %s to the client port: %s", object_id.hex(), e.details())

    def _channel(self) -> grpc.aio.Channel:
        """The client port itself, not a cluster address relayed through it."""
        if self._own_channel is None:
            self._own_channel = direct_channel(self.gateway)
        return self._own_channel

    async def close(self) -> None:
        if self._own_channel is not None:
            await self._own_channel.close()
        self._copies.clear()
        if self._copier is not None:
            self._copier.shutdown(wait=False)
        if self._copies_dir:
            client_copies.remove_dir(self._copies_dir)


async def _upload_port_of(core: CoreWorker) -> int:
    """The upload port of the client's node agent (its Stats trailers name it), 0 if none."""
    try:
        call = core.node_stub().Stats(pb.Empty(), metadata=core.metadata, timeout=config.CONNECT_TIMEOUT_S)
        await call
        for key, value in await call.trailing_metadata() or ():
            if key == UPLOAD_PORT_METADATA_KEY:
                return int(value)
    except (grpc.aio.AioRpcError, ValueError):
        pass
    return 0


def _unlink(path: str) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


Transport = DirectTransport | GatewayTransport


def choose(gateway: str | None, serves_own_store: bool = False) -> Transport:
    return GatewayTransport(gateway) if gateway else DirectTransport(serves_own_store)
