"""The head's tables in Redis, so a head restart loses nothing (KubeRay's GCS fault tolerance).

Each table is one Redis hash under a per-cluster prefix, `kastor:{cluster_id}:{table}`, so
several clusters can share one Redis and one cluster's keys can be dropped on its own. A write
returns only once Redis has acknowledged it; run Redis with `appendonly yes` (and
`appendfsync always` for no loss even on a Redis crash) for the data to survive a Redis restart.
While Redis is unreachable, calls retry with backoff for REDIS_RETRY_DEADLINE_S: the head's
acknowledgements wait rather than fail.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import re

import redis.asyncio as aioredis
from kastor.runtime import retry, settings
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, BusyLoadingError, ConnectionError, RedisError, TimeoutError

log = logging.getLogger("kastor.redis_store")

__all__ = ["RedisError", "RedisStore", "delete_cluster", "resolve_password"]

KEY_PREFIX = "kastor"
ENV_REDIS_PASSWORD = settings.REDIS_PASSWORD.name
REDIS_RETRY_DEADLINE_S = settings.REDIS_RETRY_DEADLINE_S.get()
_BACKOFF_CAP_S = 1.0
# Waiting for Redis to come up (in Kubernetes it may start after the head), every half second up
# to a deadline set per call; a wrong password (which redis-py files under ConnectionError) is final.
REDIS_STARTUP = retry.RetryPolicy(initial_s=0.5, max_s=0.5, retry_on=(ConnectionError, TimeoutError, BusyLoadingError),
                                  fatal=(AuthenticationError,))


def redis_url(address: str) -> str:
    """Accepts `host:port`, `redis://...` or `rediss://...` (TLS)."""
    if "://" in address:
        if not address.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"Unsupported Redis address {address!r}: use host:port, redis://host:port "
                             f"or rediss://host:port (TLS).")
        return address
    if ":" not in address:
        raise ValueError(f"Redis address {address!r} has no port: use host:port, e.g. {address}:6379.")
    return f"redis://{address}"


def resolve_password(password_file: str | None) -> str | None:
    """The password comes from a file (a mounted Secret) or KASTOR_REDIS_PASSWORD, never a flag."""
    if password_file:
        with open(password_file) as f:
            return f.read().strip() or None
    return settings.REDIS_PASSWORD.get()


_CLUSTER_ID = re.compile(r"[A-Za-z0-9._/-]{1,200}")


def check_cluster_id(cluster_id: str | None) -> str:
    if not cluster_id or not _CLUSTER_ID.fullmatch(cluster_id):
        raise ValueError(f"Invalid cluster id {cluster_id!r}: the Redis store needs one (--cluster-id or "
                         f"KASTOR_CLUSTER_ID) of letters, digits and . _ / - only. It namespaces this "
                         f"cluster's keys, and a restarted head finds its state by it.")
    return cluster_id


def table_key(cluster_id: str, table: str) -> str:
    return f"{KEY_PREFIX}:{cluster_id}:{table}"


def connect(address: str, password: str | None, retries: int | None = None) -> aioredis.Redis:
    if retries is None:
        retries = max(1, int(REDIS_RETRY_DEADLINE_S / _BACKOFF_CAP_S))
    return aioredis.from_url(
        redis_url(address), password=password, socket_connect_timeout=5, socket_timeout=10,
        retry=Retry(ExponentialBackoff(cap=_BACKOFF_CAP_S, base=0.05), retries),
        retry_on_error=[ConnectionError, TimeoutError, BusyLoadingError, ConnectionResetError])


async def wait_until_reachable(address: str, password: str | None, deadline_s: float) -> None:
    """Waits for Redis to come up (in Kubernetes it may start after the head), but fails at once
    on a wrong password: redis-py files that under ConnectionError, which it would retry."""
    probe = connect(address, password, retries=0)
    try:
        await retry.call_async(probe.ping, dataclasses.replace(REDIS_STARTUP, deadline_s=deadline_s),
                               on_retry=lambda e, _n, _d: log.warning("waiting for Redis at %s: %s", address, e))
    except AuthenticationError as e:
        raise AuthenticationError(f"Redis at {address} refused the password ({e}); check "
                                  f"{ENV_REDIS_PASSWORD} or --redis-password-file.") from None
    except (ConnectionError, TimeoutError, BusyLoadingError) as e:
        raise ConnectionError(f"Cannot reach Redis at {address} (tried for {deadline_s:.0f}s): {e}") from None
    finally:
        await probe.aclose()


class RedisStore:
    """The Store interface (see store.py) over Redis hashes."""

    def __init__(self, client: aioredis.Redis, cluster_id: str, address: str):
        check_cluster_id(cluster_id)
        self._r = client
        self._cluster_id = cluster_id
        self._address = address

    @classmethod
    async def open(cls, address: str, cluster_id: str, password: str | None = None) -> RedisStore:
        check_cluster_id(cluster_id)
        await wait_until_reachable(address, password, REDIS_RETRY_DEADLINE_S)
        log.info("head state in Redis at %s under %s", address, table_key(cluster_id, "*"))
        return cls(connect(address, password), cluster_id, address)

    def _key(self, table: str) -> str:
        return table_key(self._cluster_id, table)

    async def put(self, table: str, key: str, value: bytes) -> None:
        await self._r.hset(self._key(table), key, value)

    async def get(self, table: str, key: str) -> bytes | None:
        return await self._r.hget(self._key(table), key)

    async def delete(self, table: str, key: str) -> None:
        await self._r.hdel(self._key(table), key)

    async def get_all(self, table: str) -> dict[str, bytes]:
        raw = await self._r.hgetall(self._key(table))
        return {k.decode(): v for k, v in raw.items()}

    async def close(self) -> None:
        await self._r.aclose()

    async def reachable(self, timeout_s: float) -> bool:
        """One PING within `timeout_s`. The client retries a lost connection with backoff, so
        the deadline, not an error, is what says a Redis on a lost node is gone."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._r.ping()
            return True
        except (builtins.TimeoutError, RedisError, OSError):  # this module's TimeoutError is redis' own
            return False


async def delete_cluster(address: str, cluster_id: str, password: str | None = None) -> int:
    """Drops every key of one cluster (the operator calls this when an ActorCluster goes)."""
    check_cluster_id(cluster_id)
    client = connect(address, password)
    try:
        keys = [k async for k in client.scan_iter(match=table_key(cluster_id, "*"), count=500)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()
