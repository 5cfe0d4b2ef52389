"""Turning Python values into bytes and back, with zero-copy reads of large buffers.

Values are pickled with cloudpickle and protocol 5, so numpy arrays and other buffer
holders travel as out-of-band buffers. A frame keeps those buffers 64-byte aligned; read
from a memory-mapped file in the node's store, arrays come back as read-only views with no
copy, which is what makes a 100 MiB `get` cheap.
"""

from __future__ import annotations

import errno
import mmap
import os
import pickle
import struct
from collections.abc import Sequence

from kastor.runtime import pickler, store_owners
from kastor.runtime.exceptions import ObjectStoreFullError
from kastor.runtime.protocol import kastor_pb2 as pb

_PLAIN = b"\x00"   # frame tag: in-band pickle only
_OOB = b"\x01"     # frame tag: header + in-band pickle + aligned out-of-band buffers
_ALIGN = 64
_HEAD = struct.Struct("<IQ")   # buffer count, in-band length


class SerializationError(TypeError):
    """A value could not be pickled; the message names the value and how to fix it."""


class Serialized:
    """A pickled value not yet laid out: its frame is written inline or into a file."""

    __slots__ = ("inband", "buffers", "size")

    def __init__(self, inband: bytes, buffers: list[pickle.PickleBuffer]):
        self.inband = inband
        self.buffers = [b.raw() for b in buffers]
        self.size = _frame_size(len(inband), [b.nbytes for b in self.buffers])

    def to_bytes(self) -> bytes:
        if not self.buffers:
            return _PLAIN + self.inband
        out = bytearray(self.size)
        self._write_into(memoryview(out))
        return bytes(out)

    def write_file(self, path: str) -> int:
        """Writes the frame to `path` (tmpfs in practice) and returns its size.

        One `writev` lets the kernel copy straight from the value's buffers; it measured
        several times faster than filling a fresh mapping page by page. A store that cannot
        hold the whole frame raises ObjectStoreFullError and keeps no part of it.
        """
        store = os.path.dirname(path) or "."
        _check_room(store, self.size)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in _chunks(self._segments()):
                _writev_all(fd, chunk)
        except BaseException as e:
            os.close(fd)
            os.unlink(tmp)  # no partial object is left behind to fill the store
            if isinstance(e, OSError) and e.errno in _FULL:
                raise _store_full(store, self.size, e.strerror) from None
            raise
        os.close(fd)
        os.rename(tmp, path)  # readers never see a half-written object
        return self.size

    def write_fd(self, fd: int, old_size: int, store: str, mapped: memoryview | None = None) -> None:
        """Overwrites the open file `fd`, now `old_size` bytes long, with the frame, from its
        start: a freed object file reused for a new object (store_recycle), whose pages are
        already allocated (the caller cuts it to `size`). `mapped`, if given, is a writable
        mapping of the file's first bytes (no longer than `old_size`, so every page it covers
        exists): the frame's head goes there by `memcpy`, the rest by `pwritev`. Fails with
        ObjectStoreFullError before writing when the store (the directory `store`) cannot hold
        the growth."""
        if self.size > old_size:
            _check_room(store, self.size - old_size)
        segments = self._segments()
        offset = 0
        if mapped is not None:
            segments, offset = _copy_into(mapped, segments)
        try:
            for chunk in _chunks(segments):
                offset = _writev_all(fd, chunk, offset)
        except OSError as e:
            if e.errno in _FULL:
                raise _store_full(store, self.size, e.strerror) from None
            raise

    def iter_chunks(self, size: int):
        """The frame, in pieces of at most `size` bytes, for streaming it to another node."""
        pending = bytearray()
        for seg in self._segments():
            view = memoryview(seg).cast("B")
            while view:
                take = size - len(pending)
                pending += view[:take]
                view = view[take:]
                if len(pending) == size:
                    yield bytes(pending)
                    pending.clear()
        if pending:
            yield bytes(pending)

    def segments(self) -> list:
        """The frame as the pieces it is made of (the value's own buffers among them, uncopied),
        for writing it out with one gather or send per piece."""
        return self._segments()

    def _segments(self) -> list:
        if not self.buffers:
            return [_PLAIN, self.inband]
        lengths = [b.nbytes for b in self.buffers]
        header = _OOB + _HEAD.pack(len(lengths), len(self.inband)) + struct.pack(f"<{len(lengths)}Q", *lengths)
        segments: list = [header, self.inband]
        pos = len(header) + len(self.inband)
        for buf in self.buffers:
            pad = _aligned(pos) - pos
            if pad:
                segments.append(b"\0" * pad)
            segments.append(buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf)
            pos += pad + buf.nbytes
        return segments

    def _write_into(self, out: memoryview) -> None:
        pos = 0
        for seg in self._segments():
            out[pos:pos + len(seg)] = seg
            pos += len(seg)


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _copy_into(out: memoryview, segments: list) -> tuple[list, int]:
    """Copies the leading `segments` into `out` while they fit; returns what is left of them
    (the one cut short, then the rest) and how many bytes were copied."""
    pos = 0
    for i, seg in enumerate(segments):
        view = memoryview(seg).cast("B")
        take = min(len(view), len(out) - pos)
        out[pos:pos + take] = view[:take]
        pos += take
        if take < len(view):
            return [view[take:], *segments[i + 1:]], pos
    return [], pos


def _writev_all(fd: int, buffers: list, offset: int | None = None) -> int:
    """`os.writev` (`os.pwritev` at `offset`, if given) until every byte is written: a short
    count (a full tmpfs returns one before it fails with ENOSPC) must never leave a silently
    truncated object. Returns the offset after the last byte (with `offset`)."""
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        written = os.writev(fd, views) if offset is None else os.pwritev(fd, views, offset)
        if offset is not None:
            offset += written
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]
    return offset or 0


def _check_room(store: str, size: int) -> None:
    """Fails before writing anything when the store's file system cannot hold `size` bytes."""
    try:
        st = os.statvfs(store)
    except OSError:
        return  # the write itself will say what is wrong
    if size > st.f_bavail * st.f_frsize:
        raise _store_full(store, size, "it does not fit")


def _store_full(store: str, size: int, reason: str) -> ObjectStoreFullError:
    try:
        st = os.statvfs(store)
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        room = f"{free} of its {total} bytes are free" + (", the object is larger than the whole store"
                                                          if size > total else "")
    except OSError:
        room = "its free space is unknown"
    return ObjectStoreFullError(
        f"Could not store an object of {size} bytes in the object store at {store}: {reason} ({room}). "
        f"Drop refs to objects you no longer need so they are freed, store fewer or smaller objects at "
        f"once, or give the store more room (the size of the node's /dev/shm, e.g. the memory emptyDir's "
        f"sizeLimit in the pod, or the node's --store-root).")


def _chunks(segments: list, limit: int = 512) -> list[list]:
    # writev takes at most IOV_MAX buffers per call.
    return [segments[i:i + limit] for i in range(0, len(segments), limit)]


def _aligned(pos: int) -> int:
    return (pos + _ALIGN - 1) // _ALIGN * _ALIGN


def _frame_size(inband: int, lengths: Sequence[int]) -> int:
    if not lengths:
        return 1 + inband
    pos = 1 + _HEAD.size + 8 * len(lengths) + inband
    for n in lengths:
        pos = _aligned(pos) + n
    return pos


def serialize(value: object, what: str = "value") -> Serialized:
    buffers: list[pickle.PickleBuffer] = []
    try:
        inband = pickler.dumps(value, protocol=5, buffer_callback=buffers.append)
    except ObjectStoreFullError:  # a ref inside it could not be uploaded (runtime/lazy_puts.py): said as is
        raise
    except Exception as e:  # pickling runs arbitrary __reduce__ code, any error can surface
        raise SerializationError(
            f"Could not serialize {what}: {type(e).__name__}: {e}. Kastor ships arguments and "
            f"results with cloudpickle; pass picklable values (e.g. open files, locks and "
            f"sockets are not), or create the resource inside the task or actor instead."
        ) from e
    return Serialized(inband, buffers)


def plain_frame(value: object) -> bytes:
    """The frame of a value pickler.is_plain accepts, as serialize(value).to_bytes() lays it out
    (the same bytes), without building a Serialized: one per task return was a measurable part
    of a no-op task's cost on its worker (bench/README.md, "Tasks")."""
    return _PLAIN + pickle.dumps(value, protocol=5)


def dumps(value: object, what: str = "value") -> bytes:
    return serialize(value, what).to_bytes()


def error_value(exc: BaseException) -> pb.Value:
    """A stored value that raises `exc` where it is read (a failed call's returns, a lost object)."""
    return pb.Value(data=dumps(exc, "error"), is_error=True)


def loads(frame: bytes | memoryview) -> object:
    view = memoryview(frame)
    tag = view[0:1].tobytes()
    if tag == _PLAIN:
        return pickle.loads(view[1:])
    if tag != _OOB:
        raise ValueError("corrupt object frame (unknown tag)")
    count, inband_len = _HEAD.unpack_from(view, 1)
    pos = 1 + _HEAD.size
    lengths = struct.unpack_from(f"<{count}Q", view, pos)
    pos += 8 * count
    inband = view[pos:pos + inband_len]
    pos += inband_len
    buffers = []
    for n in lengths:
        pos = _aligned(pos)
        buffers.append(view[pos:pos + n])
        pos += n
    return pickle.loads(inband, buffers=buffers)


def load_file(path: str) -> object:
    """Maps the file read-only: numpy arrays in it come back as zero-copy, read-only views.

    The mapping holds a shared lock on the file for as long as it lives (store_recycle), so a
    freed object's file is never reused under these views."""
    with open(path, "rb") as f:
        store_owners.lock_for_reading(f.fileno(), path)
        size = os.fstat(f.fileno()).st_size
        mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
    return loads(memoryview(mm))
