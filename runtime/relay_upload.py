"""A remote client's upload of a large value as raw bytes: through the client port's frame relay
to the node agent's upload port (upload_server.py), instead of gRPC PutObject.

Blocking, on the thread that called put(): the value's buffers go to the socket with one send
each, no copy in Python and no hop to the core's loop. Any failure raises RelayUploadFailed,
and the caller uploads through gRPC instead (nothing was stored: the node deletes a partial
upload).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Protocol

from kastor.runtime import config, receive_deadline, tls
from kastor.runtime.frames import RelayRoute, frame
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.upload_server import FAILED, OK


class Frame(Protocol):
    """A value's frame as uploaded: a Serialized, or one already in a file (lazy_puts.StoredFrame)."""

    size: int

    def segments(self) -> list: ...

    def iter_chunks(self, size: int) -> Iterator[bytes]: ...


class RelayUploadFailed(Exception):
    """The raw upload could not be made; the value was not stored."""


class UploadRefused(Exception):
    """The node took the upload and refused it (e.g. no room): gRPC would be refused too."""


def upload(route: RelayRoute, token: str, node_upload_address: str, ser: Frame, name: str) -> pb.ObjectLocation:
    host, _, port = route.address.rpartition(":")
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=config.CONNECT_TIMEOUT_S)
    except OSError as e:
        raise RelayUploadFailed(f"cannot connect to the frame relay at {route.address}: {e}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = tls.client_ssl_context()
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname=tls.server_name())
        sock.settimeout(receive_deadline.receive_timeout_s())
        if _read_frame(sock) != route.greeting():
            raise RelayUploadFailed(f"{route.address} is not this cluster's frame relay")
        header = pb.ObjectChunk(name=name, total=ser.size)
        target = f"{node_upload_address} upload={ser.size}"  # the relay splices a body it knows the size of
        sock.sendall(frame(token.encode()) + frame(target.encode()) + frame(header.SerializeToString()))
        answer = _read_frame(sock)
        if answer[:1] == FAILED:
            raise UploadRefused(answer[1:].decode(errors="replace"))
        if answer:
            raise RelayUploadFailed("the node's upload port did not accept the upload")
        for piece in ser.segments():
            sock.sendall(piece)
        outcome = _read_frame(sock)
    except OSError as e:
        raise RelayUploadFailed(f"the upload through {route.address} broke: {e}") from None
    finally:
        sock.close()
    if outcome[:1] == OK:
        return pb.ObjectLocation.FromString(outcome[1:])
    if outcome[:1] == FAILED:
        raise UploadRefused(outcome[1:].decode(errors="replace"))
    raise RelayUploadFailed("the node's upload port answered nothing recognisable")


def _read_frame(sock: socket.socket) -> bytes:
    size = int.from_bytes(_read_exactly(sock, 4), "big")
    if size > 1 << 20:
        raise RelayUploadFailed(f"a {size}-byte answer frame: not a Kastor upload port")
    return _read_exactly(sock, size)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise RelayUploadFailed("the connection closed before the answer came")
        data += chunk
    return bytes(data)
