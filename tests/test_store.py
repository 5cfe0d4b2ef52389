"""One contract for the head's stores: the in-memory default and Redis (real redis-server).

The head depends only on this interface, so a store that passes here can hold a cluster.
"""

import asyncio

import pytest
import redis
from kastor.runtime.redis_store import RedisStore, delete_cluster, redis_url
from kastor.runtime.store import InMemoryStore
from redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), password="s3cret").start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
def make_store(request, redis_server):
    """Builds stores of one kind; Redis ones get distinct cluster ids (one shared server)."""
    made = []

    async def make(cluster_id: str = "test-cluster"):
        if request.param == "memory":
            store = InMemoryStore()
        else:
            unique = f"{cluster_id}-{request.node.originalname}-{len(made)}"
            await delete_cluster(redis_server.address, unique, "s3cret")
            store = await RedisStore.open(redis_server.address, unique, password="s3cret")
        made.append(store)
        return store

    yield make


def run(coro):
    return asyncio.run(coro)


def test_put_get_delete(make_store):
    async def scenario():
        s = await make_store()
        assert await s.get("actors", "a") is None
        await s.put("actors", "a", b"\x00binary\xff")
        assert await s.get("actors", "a") == b"\x00binary\xff"
        await s.put("actors", "a", b"v2")
        assert await s.get("actors", "a") == b"v2"
        await s.delete("actors", "a")
        assert await s.get("actors", "a") is None
        await s.delete("actors", "never-there")
        await s.close()

    run(scenario())


def test_tables_are_separate_and_get_all_lists_one(make_store):
    async def scenario():
        s = await make_store()
        await s.put("actors", "x", b"1")
        await s.put("actors", "y", b"2")
        await s.put("nodes", "x", b"node")
        assert await s.get_all("actors") == {"x": b"1", "y": b"2"}
        assert await s.get_all("nodes") == {"x": b"node"}
        assert await s.get_all("jobs") == {}
        await s.close()

    run(scenario())


def test_redis_state_outlives_the_client_and_is_per_cluster(redis_server):
    async def scenario():
        a = await RedisStore.open(redis_server.address, "cluster-a", password="s3cret")
        await a.put("actors", "k", b"from-a")
        await a.close()
        again = await RedisStore.open(redis_server.address, "cluster-a", password="s3cret")
        other = await RedisStore.open(redis_server.address, "cluster-b", password="s3cret")
        assert await again.get("actors", "k") == b"from-a", "a new head finds the old head's state"
        assert await other.get("actors", "k") is None, "clusters sharing a Redis do not see each other"
        await other.put("actors", "k", b"from-b")
        assert await delete_cluster(redis_server.address, "cluster-a", "s3cret") == 1
        assert await again.get_all("actors") == {}
        assert await other.get("actors", "k") == b"from-b", "deleting one cluster's keys spares the others"
        await again.close()
        await other.close()

    run(scenario())


def test_redis_write_survives_a_redis_crash(tmp_path):
    server = RedisServer(tmp_path).start()
    try:
        async def write():
            s = await RedisStore.open(server.address, "durable")
            await s.put("actors", "acknowledged", b"yes")
            await s.close()

        run(write())
        server.kill()
        server.start()

        async def read():
            s = await RedisStore.open(server.address, "durable")
            try:
                return await s.get("actors", "acknowledged")
            finally:
                await s.close()

        assert run(read()) == b"yes"
    finally:
        server.stop()


def test_wrong_password_is_a_clear_error(redis_server):
    with pytest.raises(redis.AuthenticationError, match="refused the password"):
        run(RedisStore.open(redis_server.address, "c", password="wrong"))


@pytest.mark.parametrize("cluster_id", ["", "has space", "a:b", "star*"])
def test_bad_cluster_id_is_rejected(redis_server, cluster_id):
    with pytest.raises(ValueError, match="cluster id"):
        RedisStore(None, cluster_id, redis_server.address)


@pytest.mark.parametrize("address,url", [("h:6379", "redis://h:6379"), ("rediss://h:6380", "rediss://h:6380")])
def test_redis_addresses(address, url):
    assert redis_url(address) == url


@pytest.mark.parametrize("address", ["justahost", "http://h:1"])
def test_bad_redis_address(address):
    with pytest.raises(ValueError, match="Redis address"):
        redis_url(address)
