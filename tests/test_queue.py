"""kastor.util.queue.Queue, Ray's shared FIFO: one asyncio actor holds the items."""

import asyncio
import queue
import sys

import cloudpickle
import kastor
import pytest
from kastor.exceptions import ActorDiedError
from kastor.util.queue import Empty, Full, Queue

cloudpickle.register_pickle_by_value(sys.modules[__name__])

DEADLINE_S = 60
pytestmark = pytest.mark.usefixtures("embedded_cluster")


@kastor.remote
def produce(q: Queue, n: int) -> int:
    for i in range(n):
        q.put(i)
    return n


@kastor.remote
def consume_one(q: Queue):
    return q.get()  # blocks in the queue's actor until something arrives


@kastor.remote
class Consumer:
    def drain(self, q: Queue, n: int) -> list[int]:
        return [q.get(timeout=DEADLINE_S) for _ in range(n)]


def test_items_flow_in_order_from_a_task_to_an_actor():
    q = Queue()
    consumer = Consumer.remote()
    drained = consumer.drain.remote(q, 20)
    assert kastor.get(produce.remote(q, 20), timeout=DEADLINE_S) == 20
    assert kastor.get(drained, timeout=DEADLINE_S) == list(range(20))
    assert q.empty() and q.qsize() == 0 and len(q) == 0


def test_a_blocked_get_wakes_when_an_item_arrives():
    q = Queue()
    waiting = consume_one.remote(q)
    ready, _ = kastor.wait([waiting], timeout=0.2)
    assert not ready, "get() on an empty queue must wait"
    q.put("late item")
    assert kastor.get(waiting, timeout=DEADLINE_S) == "late item"


def test_bounded_queue_refuses_what_does_not_fit():
    q = Queue(maxsize=2)
    q.put(1)
    q.put_nowait(2)
    assert q.full()
    with pytest.raises(Full):
        q.put_nowait(3)
    with pytest.raises(Full):
        q.put(3, timeout=0.1)
    with pytest.raises(Full):
        q.put(3, block=False)
    assert [q.get(), q.get_nowait()] == [1, 2]
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(timeout=0.1)
    assert isinstance(Empty(), queue.Empty), "code catching queue.Empty keeps working"


def test_batches_are_all_or_nothing():
    q = Queue(maxsize=3)
    with pytest.raises(Full):
        q.put_nowait_batch([1, 2, 3, 4])
    assert q.qsize() == 0, "a batch that does not fit adds nothing"
    q.put_nowait_batch([1, 2, 3])
    with pytest.raises(Empty):
        q.get_nowait_batch(4)
    assert q.qsize() == 3, "a batch that is not there takes nothing"
    assert q.get_nowait_batch(2) == [1, 2]


def test_async_put_and_get():
    q = Queue()

    async def roundtrip():
        await q.put_async("a")
        return await q.get_async(timeout=DEADLINE_S)

    assert asyncio.run(roundtrip()) == "a"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="maxsize"):
        Queue(maxsize=-1)
    q = Queue()
    with pytest.raises(ValueError, match="timeout"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="num_items"):
        q.get_nowait_batch(-2)


def test_shutdown_ends_the_queue_actor():
    q = Queue()
    q.put(1)
    actor = q.actor
    q.shutdown()
    with pytest.raises(ActorDiedError):
        kastor.get(actor.qsize.remote(), timeout=DEADLINE_S)
