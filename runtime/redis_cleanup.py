"""Deleting one cluster's GCS state from a Redis that outlives it.

A managed Redis goes with its pod; an external one keeps a deleted cluster's keys for ever
(and a cluster re-created under the same name would find them). Both `kastor redis-clean`
and the operator's finalizer for clusters on an external Redis call `clean`, so the
operator gets a typed result or exception instead of parsing a subprocess's stderr.
"""

from __future__ import annotations

import asyncio

from kastor.runtime import redis_store

__all__ = ["CleanupError", "clean"]


class CleanupError(RuntimeError):
    """The keys could not be deleted (bad address or id, Redis unreachable, wrong password)."""


def clean(redis_address: str, cluster_id: str, password: str | None = None) -> int:
    """Deletes every key of `cluster_id` from the Redis at `redis_address`; returns how many.

    Blocking (it runs its own event loop): call it from a thread, not from a running loop.
    """
    try:
        return asyncio.run(redis_store.delete_cluster(redis_address, cluster_id, password))
    except (ValueError, OSError, redis_store.RedisError) as e:
        raise CleanupError(f"cannot delete the keys of cluster {cluster_id!r} from Redis at {redis_address}: "
                           f"{e}") from e
