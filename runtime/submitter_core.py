"""What the submitters (task_submitter.py, actor_submitter.py) and pending.py use of the core,
named as two small interfaces instead of "the whole CoreWorker".

The core hands itself in, and satisfies these structurally; the submitters are typed against
them, so they need not import core.py (which imports them: a cycle), and what they may reach
is written down. tests/test_layering.py checks that they use nothing else of it: a submitter
that needs more of the core adds it here first, where the dependency is visible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import grpc
from kastor.runtime.object_ref import ObjectRef
from kastor.runtime.ownership import ObjectTable
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc


class Peers(Protocol):
    """Reaching other processes: the channel cache, stubs on it, and the head's retrying call."""

    metadata: tuple[tuple[str, str], ...]  # the cluster token, for every call
    address: str  # this process's owner address: results and borrowers come back to it
    node_address: str  # the node agent that grants leases (set once a remote client found one)

    def channel(self, address: str) -> grpc.aio.Channel: ...

    def worker_stub(self, address: str) -> pb_grpc.CoreWorkerStub: ...

    def node_stub(self, address: str | None = None) -> pb_grpc.NodeAgentStub: ...

    async def head_rpc(self, method: str, request: Any, timeout: float | None = 60) -> Any: ...


class OwnedValues(Protocol):
    """The owner's objects: its ownership table, and the values of refs it waits on or frees."""

    objects: ObjectTable

    def decode(self, object_id: bytes, value: pb.Value) -> Any: ...

    def value_when_ready(self, ref: ObjectRef, callback: Callable[[pb.Value], None]) -> None: ...

    def free_value(self, value: pb.Value) -> None: ...


class SubmitterCore(Peers, OwnedValues, Protocol):
    """All a submitter uses of the core (CoreWorker satisfies it)."""
