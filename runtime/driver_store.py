"""The object store of a driver that has no node of its own, served to the cluster.

A driver in an ordinary pod (or on any host without a node agent) cannot write a node's
store: its values over the inline limit (config.INLINE_LIMIT, 100 KiB) stay in a folder of
its own. Workers fetch a stored value from `location.node_address` with the node agent's
FetchObject, so the driver serves that same call for its folder on its own port (the
address it advertises, which workers already call back for its refs and generator items).
The data then goes straight from the driver to the process that reads it, as from a node:
no upload to a node ahead of need, nothing through the head, and the driver's values go
away with it, as an owner's do.

It answers FetchObject and FreeObjects only (the other NodeAgent calls are UNIMPLEMENTED),
for the object files of its folder only (store_owners.in_store), and behind the server's token check like every
Kastor port (auth.py refuses a call before its request is parsed).
"""

from __future__ import annotations

import os

import grpc
from kastor.runtime import config, store_owners
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc


class DriverStoreService(pb_grpc.NodeAgentServicer):
    """FetchObject / FreeObjects for the files of one driver's store folder."""

    def __init__(self, store_dir: str) -> None:
        self._root = os.path.realpath(store_dir)

    def _store_path(self, path: str) -> str | None:
        """`path` if it names an object file of the store folder (no escape through `..` or links)."""
        return store_owners.in_store(self._root, path)

    async def FetchObject(self, request, context):
        path = self._store_path(request.path)
        if path is None or not os.path.exists(path):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no object at {request.path} in this driver's store "
                                                           f"(the driver freed it, or it is not the driver's)")
        for chunk, total in store_owners.read_chunks(path, config.FETCH_CHUNK_BYTES):
            yield pb.ObjectChunk(data=chunk, total=total)

    async def FreeObjects(self, request, context):
        store_owners.free(self._root, request.paths)
        return pb.Empty()


def register(server: grpc.aio.Server, store_dir: str) -> None:
    """Serves the driver's store folder on `server` (the driver's own call port)."""
    pb_grpc.add_NodeAgentServicer_to_server(DriverStoreService(store_dir), server)
