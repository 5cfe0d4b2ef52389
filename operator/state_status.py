"""A DetachedActor's checkpoint in its status: when its durable state was last saved, and its size.

Read from the cluster's Redis (spec.state.store: redis), whose address the head reports, without
reading the checkpoint itself. A volume store lives on a claim only the actor's pod mounts, so its
status shows no checkpoint fields.
"""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Any

from kastor.operator.head_client import HeadClient
from kastor.operator.spec import ActorSpec
from kastor.runtime.checkpoint_stores import RedisStore
from kastor.runtime.protocol.kastor_pb2 import CheckpointStoreReply

log = logging.getLogger("kastor.operator.actor")

_stores: dict[tuple[str, str, str], RedisStore] = {}
_lock = threading.Lock()


def checkpoint_status(client: HeadClient, head: str, token: str, ca: str | None, actor: ActorSpec) -> dict[str, Any]:
    """`lastCheckpointTime` and `lastCheckpointBytes` for the status, or {} when unknown."""
    if actor.state is None or actor.state.store != "redis":
        return {}
    try:
        where = client.checkpoint_store(head, token, ca)
        if not where.redis_address:
            return {}
        return stat_fields(where, (actor.namespace, actor.name))
    except Exception as e:  # CheckpointError, grpc.RpcError: the status is informative: never fail a reconcile for it
        log.info("cannot read the checkpoint of actor %s: %s", actor.name, e)
        return {}


def stat_fields(where: CheckpointStoreReply, actor: tuple[str, str]) -> dict[str, Any]:
    """The status fields of the checkpoint of `actor` ((namespace, name) in the GCS) in the store
    at `where`, read from its header only; {} if it has none. Raises what the store raises."""
    if not where.redis_address:
        return {}
    key = (where.redis_address, where.redis_password, where.key_prefix)
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = RedisStore(where.redis_address, prefix=where.key_prefix,
                                              password=where.redis_password or None)
    stat = store.stat(f"{actor[0]}/{actor[1]}")
    if stat is None:
        return {}
    when = datetime.datetime.fromtimestamp(stat.saved_at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"lastCheckpointTime": when, "lastCheckpointBytes": stat.size}
