"""A node agent's upload port: a large value from a remote client, as raw bytes into the store.

A notebook behind the client port cannot write the node's store. Uploading through gRPC
(PutObject, relayed by the client port) cost three gRPC stacks about 0.55 s of CPU per
100 MiB (bench/README.md); here the bytes come through the client port's frame relay
(frame_relay.py), which splices them undecoded, and go to the file as they arrive.

A connection is:

    client -> node: the cluster token (frames.py's framing; compared in constant time before
                    anything else is looked at), then a header frame (an ObjectChunk with the
                    object's name and total size, no data)
    node -> client: an empty frame: accepted (the store has room), after which the client
                    sends exactly `total` raw bytes
    node -> client: the outcome frame: b"\\x00" + the ObjectLocation, or b"\\x01" + why not

Receive deadline: the token and the header must arrive within the receive timeout of the
connection's start, and the body may not pause longer than it; a stalled upload is dropped
and its partial file deleted.

Without TLS, a body of a MiB or more is moved socket -> pipe -> file by `splice(2)` on a thread
of its own (splice_copy.py), with no copy through Python; the size check, the token and the
receive deadline are as above (the splice thread times the body's pauses).

Freed uploads (FreeObjects, when the client drops its ref) are kept in the node agent's pool
of freed files (store_recycle, `<store>/.recycle/`), and the next upload overwrites one in
place: writing into pages a file already holds costs about a third of fresh tmpfs pages.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import threading

from kastor.runtime import auth, receive_deadline, settings, spilling, splice_copy, store_recycle, tls
from kastor.runtime.frames import MAX_TOKEN_BYTES, FrameProtocol, frame, listening_socket
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor.upload_server")

UPLOAD_PORT_METADATA_KEY = "kastor-upload-port"  # a node agent's Stats reply names its upload port in this
MAX_HEADER_BYTES = 256
OK, FAILED = b"\x00", b"\x01"
_OBJECT_NAME = re.compile(r"[0-9a-f]{40}")


class _Upload(FrameProtocol):
    def __init__(self, server: UploadServer) -> None:
        super().__init__(server.receive_timeout)
        self._server = server
        self._authenticated = False
        self._fd = -1
        self._reused: store_recycle.Reused | None = None  # the pooled file being overwritten, if one is
        self._stop_splice: threading.Event | None = None  # set: a splice thread owns the file (_splice_body)
        self._tmp = self._path = ""
        self._left = 0
        self._total = 0
        self._peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        self.arm_deadline()

    def limit(self) -> int:
        return MAX_HEADER_BYTES if self._authenticated else MAX_TOKEN_BYTES

    def data_received(self, data: bytes) -> None:
        if self._fd < 0:
            super().data_received(data)
            if self._fd >= 0 and self._stop_splice is None:  # (a splice thread times the body itself)
                self.arm_deadline()  # accepted: the body's first bytes are due within the timeout too
            return
        self.arm_deadline()  # the body may pause no longer than the receive timeout
        if len(data) > self._left:
            self.close("more bytes than the object's announced size")
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as e:
            self._finish(FAILED + f"could not write the object on node {self._server.node_id}: {e}".encode())
            return
        self._left -= len(data)
        if not self._left:
            self._complete()

    def on_frame(self, payload: bytes) -> None:
        if not self._authenticated:
            if not hmac.compare_digest(payload, self._server.token):
                auth.log_refused_peer(self._peer, "an upload connection", "a wrong" if payload else "no")
                self.close("wrong cluster token")
                return
            self._authenticated = True
            return
        if self._fd >= 0:
            return
        try:
            header = pb.ObjectChunk.FromString(payload)
        except Exception:
            self.close("the upload header did not parse")
            return
        if not _OBJECT_NAME.fullmatch(header.name) or header.total <= 0:
            self.close(f"bad upload header (name {header.name[:60]!r}, size {header.total})")
            return
        target = spilling.pick_dir(self._server.store_dir, header.total)
        if target is None:
            self._finish(FAILED + (f"an object of {header.total} bytes does not fit in node "
                                   f"{self._server.node_id}'s store ({self._server.store_dir}) nor in its spill "
                                   f"directory").encode())
            return
        self._path = os.path.join(target, header.name)
        pool = self._server.pool
        self._reused = pool.open_reused(header.total) if pool is not None and target == pool.store_dir else None
        try:
            if self._reused is not None:
                self._fd = self._reused.fd
            else:
                self._tmp = self._path + ".upload"
                self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as e:
            self._finish(FAILED + f"could not create the object on node {self._server.node_id}: {e}".encode())
            return
        self._left = self._total = header.total
        self.write(b"")  # accepted: the body may come
        rest = self.take_buffered()
        if rest:
            self.data_received(rest)
        if self._fd >= 0 and self._left >= splice_copy.MIN_BYTES and self._server.splice:
            self._splice_body()

    def _splice_body(self) -> None:
        """Moves the rest of the body to the file inside the kernel (splice_copy), on a thread,
        with this transport paused; then answers as data_received would."""
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return
        self.transport.pause_reading()
        self.clear_deadline()  # the thread times the body's pauses
        loop = asyncio.get_running_loop()
        stop = self._stop_splice = threading.Event()
        fd, left, timeout = self._fd, self._left, self._server.receive_timeout

        sock_fd = os.dup(sock.fileno())  # the thread's own: the transport may close its fd meanwhile

        def run() -> None:
            try:
                splice_copy.copy_exactly(sock_fd, fd, left, timeout, stop)
                outcome: BaseException | int = splice_copy.readable_bytes(sock_fd)
            except (OSError, splice_copy.SpliceStopped) as e:
                outcome = e
            finally:
                os.close(sock_fd)
            try:
                loop.call_soon_threadsafe(self._body_spliced, outcome)
            except RuntimeError:  # the node agent's loop is gone: so is the connection
                pass
        threading.Thread(target=run, name="kastor-upload-splice", daemon=True).start()

    def _body_spliced(self, outcome: BaseException | int) -> None:
        self._stop_splice = None
        if self.transport is None or self.transport.is_closing():
            self._drop_partial()
            return
        if isinstance(outcome, OSError):
            self._finish(FAILED + f"could not write the object on node {self._server.node_id}: {outcome}".encode())
        elif isinstance(outcome, BaseException):
            self.close(f"the upload's body did not come whole: {outcome}")
            self._drop_partial()
        elif outcome:
            self.close("more bytes than the object's announced size")
            self._drop_partial()
        else:
            self._left = 0
            self._server.spliced += 1
            self._complete()

    def _complete(self) -> None:
        fd, reused = self._fd, self._reused
        self._fd, self._reused = -1, None
        try:
            if reused is not None:
                reused.commit(self._path, self._total)  # deletes the file if it fails
            else:
                os.close(fd)
                os.rename(self._tmp, self._path)
        except OSError as e:
            self._finish(FAILED + f"could not store the object on node {self._server.node_id}: {e}".encode())
            return
        self._tmp = ""
        self._server.stored(self._path)
        self._finish(OK + pb.ObjectLocation(node_id=self._server.node_id, node_address=self._server.address,
                                            path=self._path, size=self._total).SerializeToString())

    def _finish(self, outcome: bytes) -> None:
        self.clear_deadline()
        self._drop_partial()
        self.write(outcome)
        if self.transport is not None:
            self.transport.close()

    def _drop_partial(self) -> None:
        if self._stop_splice is not None:  # the splice thread still writes the file: it drops it when it ends
            self._stop_splice.set()
            return
        if self._reused is not None:
            self._reused.abort()
            self._reused = None
            self._fd = -1
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._tmp:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
            self._tmp = ""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._drop_partial()  # a client gone (or dropped) mid-upload leaves nothing behind


class UploadServer:
    """Listens for remote clients' uploads beside the node agent's gRPC server, on its loop."""

    def __init__(self, token: str, store_dir: str, node_id: str) -> None:
        self.token = token.encode()
        self.store_dir = store_dir
        self.node_id = node_id
        self.address = ""  # the node agent's gRPC address, which the stored object's location names
        self.receive_timeout = receive_deadline.receive_timeout_s()
        self.uploads = 0  # objects stored through this port (Stats; tests read it)
        self.spliced = 0  # of those, the ones whose body was spliced to the file
        # Freed uploads, reused for the next ones (store_recycle); only files uploaded here are
        # kept (_uploaded), so a node that gets no uploads keeps no freed file.
        self.pool = store_recycle.RecyclePool(store_dir, lambda: os.path.join(store_dir, store_recycle.POOL_DIR)) \
            if settings.STORE_RECYCLE.get() else None
        self._uploaded: set[str] = set()
        self.splice = False  # large bodies go socket -> file by splice (no TLS; set by start)
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self, host: str) -> int:
        sock = listening_socket(host)
        self.port = sock.getsockname()[1]
        ssl = tls.server_ssl_context()
        self.splice = ssl is None and splice_copy.available() and settings.UPLOAD_SPLICE.get()
        self._server = await asyncio.get_running_loop().create_server(lambda: _Upload(self), sock=sock, ssl=ssl)
        return self.port

    def stored(self, path: str) -> None:
        """An upload was stored at `path`."""
        self.uploads += 1
        if self.pool is not None:
            if len(self._uploaded) >= 100_000:  # freed some other way (a job's end): forget them
                self._uploaded.clear()
            self._uploaded.add(path)

    def keep_freed(self, paths: list[str]) -> list[str]:
        """Keeps the freed uploads among `paths` for reuse (FreeObjects); returns the paths still
        to delete."""
        if self.pool is None:
            return list(paths)
        rest = []
        for path in paths:
            if path in self._uploaded:
                self._uploaded.discard(path)
                if self.pool.keep(path):
                    continue
            rest.append(path)
        return rest

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.pool is not None:
            self.pool.drain()


def upload_frames(token: str, header: pb.ObjectChunk) -> bytes:
    """The client's opening: its token and the header, framed."""
    return frame(token.encode()) + frame(header.SerializeToString())
