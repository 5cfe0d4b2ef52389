"""The durable-state policy (`Checkpoint`) and its errors, public as `kastor.state`.

The semantics are documented in client/state.py (`kastor.state`). The classes live here, in the
runtime that applies them (runtime/checkpoint.py), so that the runtime never imports the public
package; `kastor.state` re-exports them, and they name it as their module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from kastor.runtime.checkpoint_stores import (
    CheckpointError,
    CheckpointStore,
    RedisStore,
)
from kastor.runtime.exceptions import present_as

__all__ = ["Checkpoint", "CheckpointCorruptError", "CheckpointTooLargeError", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 64 * 2**20


class CheckpointTooLargeError(CheckpointError):
    """The actor's state pickled to more than the policy's `max_bytes`."""


class CheckpointCorruptError(CheckpointError):
    """The stored checkpoint cannot be read back (damaged, or saved by another class)."""


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _every(value: str | int | timedelta) -> tuple[int, float]:
    """(calls, seconds) between checkpoints; one of them is 0."""
    if value == "call":
        return 1, 0.0
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if value >= 1:
            return value, 0.0
    elif isinstance(value, timedelta):
        if value.total_seconds() > 0:
            return 0, value.total_seconds()
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())) and float(m.group(1)) > 0:
        return 0, float(m.group(1)) * _UNIT_S[m.group(2)]
    raise ValueError(f"Checkpoint(every={value!r}) is not a policy: use 'call' (after each call), a number of calls "
                     f"(every=10), or a duration ('30s', '500ms', '5m', or a datetime.timedelta).")


@dataclass(frozen=True)
class Checkpoint:
    """How an actor's state is checkpointed: pass it as `@kastor.remote(state=Checkpoint(...))`
    or `.options(state=...)`. See the module's documentation for the semantics.

    - `store`: a `CheckpointStore`; None means `RedisStore()`, the cluster's GCS Redis.
    - `every`: `"call"`, a number of calls, or a duration (`"30s"`, a `timedelta`).
    - `max_bytes`: the largest pickled state accepted.
    - `on_corrupt`: `"fail"` (the actor does not start, naming the checkpoint) or `"construct"`
      (log it, and run the constructor as if there were no checkpoint).
    """

    store: CheckpointStore | None = None
    every: str | int | timedelta = "call"
    max_bytes: int = DEFAULT_MAX_BYTES
    on_corrupt: str = "fail"
    _calls: int = field(init=False, repr=False, compare=False, default=1)
    _seconds: float = field(init=False, repr=False, compare=False, default=0.0)

    def __post_init__(self) -> None:
        if self.store is None:
            object.__setattr__(self, "store", RedisStore())
        if not isinstance(self.store, CheckpointStore):
            raise TypeError(f"Checkpoint(store=...) takes a kastor.state.CheckpointStore (FileStore, RedisStore, or "
                            f"a subclass of your own), got {type(self.store).__name__}.")
        calls, seconds = _every(self.every)
        object.__setattr__(self, "_calls", calls)
        object.__setattr__(self, "_seconds", seconds)
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int) or self.max_bytes < 1:
            raise ValueError(f"Checkpoint(max_bytes={self.max_bytes!r}) must be a positive number of bytes.")
        if self.on_corrupt not in ("fail", "construct"):
            raise ValueError(f"Checkpoint(on_corrupt={self.on_corrupt!r}) must be 'fail' (the actor does not start) "
                             f"or 'construct' (run the constructor instead).")

    @property
    def every_calls(self) -> int:
        """Save after this many calls (0: by time instead)."""
        return self._calls

    @property
    def every_seconds(self) -> float:
        """Save after the first call this long after the last save (0: by calls instead)."""
        return self._seconds


present_as("kastor.state", Checkpoint, CheckpointCorruptError, CheckpointTooLargeError)  # re-exported there
