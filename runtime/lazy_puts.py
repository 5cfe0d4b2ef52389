"""A remote client's large puts, uploaded to a node the first time the cluster needs them.

A notebook behind the client port keeps a local copy of every large value it puts (a get of
its own put reads that copy). Uploading the value at put() as well made a put cost the notebook,
the head's relay and the node agent about four times what an in-cluster put costs
(bench/README.md), even for data the notebook only ever reads back itself. So a put writes only
the local copy, and the value is uploaded (once; its node location then replaces the local one
in the object table) before anything that lets the cluster read it leaves the notebook:

- the ref as a top-level argument of a task, an actor call or an actor creation
  (CoreWorker.pack_args: the submission carries the stored value itself), and
- the ref pickled anywhere else (ObjectRef.__reduce__ -> CoreWorker.on_ref_escaped): nested in
  arguments, inside another put's value, in any other value the client hands out.

A worker can only get the ref after receiving it one of these ways. An upload that fails (a
full store) raises ObjectStoreFullError from the submission or put that needed it; the value
stays local, and the next use tries again. Ray Client uploads at put(): the difference is
deliberate (docs/notebooks.md), and KASTOR_CLIENT_LAZY_PUT=0 restores it.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable, Iterator

from kastor.runtime.protocol import kastor_pb2 as pb


class StoredFrame:
    """A value's frame already laid out in a file (a put's local copy), uploaded as it is: the
    same bytes a Serialized would send (relay_upload.Frame)."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            self.size = os.fstat(f.fileno()).st_size
            self._map = mmap.mmap(f.fileno(), self.size, access=mmap.ACCESS_READ)

    def segments(self) -> list:
        return [memoryview(self._map)]

    def iter_chunks(self, size: int) -> Iterator[bytes]:
        view = memoryview(self._map)
        for start in range(0, self.size, size):
            yield bytes(view[start:start + size])


# Sends a frame under a name to a node; returns where the node stored it.
Send = Callable[[StoredFrame, str], pb.ObjectLocation]
# Told (object id, local copy, node location) of a finished upload, before any other thread can
# see the object as uploaded.
Settle = Callable[[bytes, str, pb.ObjectLocation], None]


class LazyPuts:
    """The client's puts not uploaded yet: object id <-> its local copy's path."""

    def __init__(self) -> None:
        self._paths: dict[bytes, str] = {}
        self._ids: dict[str, bytes] = {}
        # One upload at a time: two threads passing the same ref must not upload it twice, and
        # the second must not send the ref before the first's upload is recorded.
        self._uploading = threading.Lock()

    def add(self, object_id: bytes, path: str) -> None:
        self._paths[object_id] = path
        self._ids[path] = object_id

    def pending(self, object_id: bytes) -> bool:
        return object_id in self._paths

    def upload(self, object_id: bytes, send: Send, settle: Settle) -> None:
        """Uploads `object_id` if it is still local; a failure leaves it local and raises."""
        with self._uploading:
            path = self._paths.get(object_id)
            if path is None:
                return
            loc = send(StoredFrame(path), object_id.hex())
            settle(object_id, path, loc)
            del self._paths[object_id]
            self._ids.pop(path, None)

    def discard(self, path: str) -> bool:
        """A put freed before it was ever uploaded: True if `path` was one (the caller deletes it)."""
        object_id = self._ids.pop(path, None)
        if object_id is None:
            return False
        self._paths.pop(object_id, None)
        return True
