"""One lease per node: how a node agent tells all its workers at once that it is alive (fencing).

Fencing keeps an actor to at most one live instance: every worker stops starting calls before
the head can have declared its node dead and restarted its actors elsewhere. At first each
worker renewed a lease of its own with its node agent by an RPC, five times per lease period.
With hundreds of actors on a node that is hundreds of RPCs a second into one agent. A loaded
machine starves the agent, it answers late, and every worker fences itself at once: 100-430
actors died that way in the scale benchmarks (bench/README.md).

The node agent alone proves the node alive. It heartbeats the head, and it renews one lease for
the whole node, which it publishes in a small file in its session folder. Every worker maps
that file (one page of the page cache, shared by all of them) and reads it before it starts
a call. A renewal is one write of a 44-byte record, whatever the number of workers, and a
worker's check is a read of its own mapping, without an RPC. The workers are the agent's
children on the same machine, so CLOCK_MONOTONIC (`time.monotonic()`) is one clock for all of
them, and the record can hold an absolute deadline. The file is in the session folder rather
than the store's, because two agents with the same node id on one machine (tests, a restart)
share a store folder, and the first to stop removes it.

The record (`_RECORD`, then a CRC-32 of it): a magic, the renewal count, the deadline (CLOCK_MONOTONIC
seconds before which a worker may start calls), the head's node death timeout D, and a
fenced flag. The agent writes the whole record in one copy. A reader that catches a write
half done sees a CRC mismatch and reads again, so no lock is shared across processes and a
frozen agent can never block a worker.

Why the guarantees of the per-worker lease still hold:

- The agent renews from its event loop, the same loop that heartbeats the head, and sets the
  deadline to `now + D/2`. If it freezes or dies at time F, no deadline is later than F + D/2.
  The head declares the node dead no sooner than D after the last heartbeat it received, which
  the agent sent at most one heartbeat interval before F, so every worker has stopped starting
  calls before the head restarts its actors elsewhere.
- A lease that lapsed (the agent was frozen, or so starved that it renewed only after the
  deadline) is renewed only up to D after the last heartbeat the head acknowledged was sent.
  Until then the head cannot have declared the node dead, even if the agent has not yet heard
  that it did.
- A node the head declared dead marks its file fenced for good and kills its workers. A worker
  that reads `fenced` exits. After the agent registers again, its new workers get a new file,
  so no worker of the old registration can see a renewal.
- Each agent process creates a new file (`O_EXCL`), so a stale worker of an earlier agent
  holds a mapping that nobody renews any more.

The deadline never moves back, so a worker may keep the last deadline it read and read the
file again only once that deadline has passed.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
import zlib
from dataclasses import dataclass

_MAGIC = b"KSTLEAS1"
_RECORD = struct.Struct("<8sQddQ")  # magic, renewals, deadline, death timeout D, fenced
_CRC = struct.Struct("<I")
_SIZE = _RECORD.size + _CRC.size
_MAP_BYTES = mmap.PAGESIZE
_READ_ATTEMPTS = 1000  # torn reads in a row before giving up (a write takes well under a microsecond)


@dataclass(frozen=True)
class NodeLeaseState:
    """One consistent reading of a node's lease."""

    renewals: int           # how often the agent has renewed it (a diagnostic)
    deadline: float         # time.monotonic() before which a worker of this node may start calls
    death_timeout_s: float  # the head's node death timeout D, as the agent last heard it
    fenced: bool            # the head declared the node dead: its workers exit at once


def _encode(state: NodeLeaseState) -> bytes:
    record = _RECORD.pack(_MAGIC, state.renewals, state.deadline, state.death_timeout_s, int(state.fenced))
    return record + _CRC.pack(zlib.crc32(record))


class NodeLeaseWriter:
    """The node agent's side: creates the node's lease file and renews the lease in it."""

    def __init__(self, directory: str, death_timeout_s: float):
        self.path = os.path.join(directory, f".node-lease-{os.getpid()}-{os.urandom(4).hex()}")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, _MAP_BYTES)
            self._map = mmap.mmap(fd, _MAP_BYTES)
        finally:
            os.close(fd)
        self.state = NodeLeaseState(renewals=0, deadline=0.0, death_timeout_s=death_timeout_s, fenced=False)
        self._publish()

    def renew(self, lease_s: float, death_timeout_s: float, fresh_until: float) -> bool:
        """Extends the lease to `lease_s` from now. A lease that has lapsed is extended no
        further than `fresh_until`, until when the head cannot have declared the node dead
        (see the module docstring). Returns whether the workers may start calls now."""
        if self.state.fenced:
            return False
        now = time.monotonic()
        deadline = now + lease_s
        if self.state.deadline <= now:  # lapsed: the agent was frozen or starved past it
            deadline = min(deadline, fresh_until)
        self.state = NodeLeaseState(renewals=self.state.renewals + 1, deadline=max(self.state.deadline, deadline),
                                    death_timeout_s=death_timeout_s, fenced=False)
        self._publish()
        return now < self.state.deadline

    def fence(self) -> None:
        """The head declared the node dead: this file is fenced for good (its workers exit)."""
        self.state = NodeLeaseState(renewals=self.state.renewals, deadline=self.state.deadline,
                                    death_timeout_s=self.state.death_timeout_s, fenced=True)
        self._publish()

    def close(self) -> None:
        """Fences the file and removes it; workers that mapped it still read `fenced`."""
        self.fence()
        self._map.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _publish(self) -> None:
        self._map[:_SIZE] = _encode(self.state)  # one copy of the whole record; the CRC catches a torn read


class NodeLeaseReader:
    """A worker's side: a read-only mapping of its node agent's lease file."""

    def __init__(self, path: str):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise NodeLeaseError(f"cannot open the node agent's lease file {path} ({e.strerror}): the agent that "
                                 f"started this worker is gone or was restarted") from None
        try:
            self._map = mmap.mmap(fd, _MAP_BYTES, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self.path = path

    def read(self) -> NodeLeaseState:
        for _ in range(_READ_ATTEMPTS):
            raw = self._map[:_SIZE]
            record, (crc,) = raw[:_RECORD.size], _CRC.unpack_from(raw, _RECORD.size)
            if zlib.crc32(record) == crc:
                magic, renewals, deadline, death_timeout_s, fenced = _RECORD.unpack(record)
                if magic != _MAGIC:
                    raise NodeLeaseError(f"{self.path} is not a Kastor node lease file (magic {magic!r})")
                return NodeLeaseState(renewals, deadline, death_timeout_s, bool(fenced))
        raise NodeLeaseError(f"the node lease file {self.path} stayed inconsistent for {_READ_ATTEMPTS} reads")


class NodeLeaseError(RuntimeError):
    """The node's lease file cannot be read: a worker treats it as a lease it does not have."""
