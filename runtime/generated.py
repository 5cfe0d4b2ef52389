"""The one return value of a generator call (see kastor.object_ref_generator).

The worker makes it and the caller reads it, so it lives in the runtime, which both share.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GeneratedItems:
    """How many items a generator call yielded, and the items themselves (serialized by the
    worker) when they could not be reported one by one."""

    count: int
    values: list[bytes] | None = None
