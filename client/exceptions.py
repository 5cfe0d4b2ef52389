"""Typed errors a Kastor program can catch, named and shaped like Ray 2.x's.

`TaskError` is raised by `get` when the remote code raised. Like Ray's RayTaskError, the
instance `get` raises is also an instance of the original exception's class, so
`except ZeroDivisionError` works around a remote call exactly as around a local one.
The Ray names (RayError, RayTaskError, RayActorError, ...) are aliases, so code written
against `ray.exceptions` keeps working with `import kastor as ray`.

The classes are defined in `kastor.runtime.exceptions` (the runtime raises them and must not
import the public package); they are the same objects here, and name this module as theirs.
"""

from kastor.runtime.exceptions import (
    ActorDiedError,
    ActorError,
    ActorUnavailableError,
    GetTimeoutError,
    KastorError,
    KastorSystemError,
    ObjectLostError,
    ObjectStoreFullError,
    OutOfMemoryError,
    OwnerDiedError,
    PendingCallsLimitExceeded,
    RayActorError,
    RayError,
    RaySystemError,
    RayTaskError,
    RuntimeEnvSetupError,
    TaskCancelledError,
    TaskError,
    TaskPlacementGroupRemoved,
    TaskUnschedulableError,
    WorkerCrashedError,
)

__all__ = [
    "KastorError", "TaskError", "ActorError", "ActorDiedError", "ActorUnavailableError",
    "GetTimeoutError", "TaskCancelledError", "ObjectLostError", "OwnerDiedError", "ObjectStoreFullError",
    "OutOfMemoryError", "WorkerCrashedError", "TaskUnschedulableError", "PendingCallsLimitExceeded",
    "TaskPlacementGroupRemoved",
    "KastorSystemError", "RuntimeEnvSetupError", "RayError", "RayTaskError", "RayActorError", "RaySystemError",
]
