"""A first-in, first-out queue that tasks and actors share, as `ray.util.queue.Queue`.

The items live in one asyncio actor, so a blocked `get` or `put` parks a coroutine there
rather than a process, and the queue itself is a small picklable value (it holds only
the actor's handle) that can be passed to any task or actor.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterable
from typing import Any

import kastor


class Empty(queue.Empty):
    """`get` found nothing before its timeout (or at once, when not blocking)."""


class Full(queue.Full):
    """`put` found no room before its timeout (or at once, when not blocking)."""


class Queue:
    """A FIFO queue any task or actor can use: blocking, timed, non-blocking, batched and async `put`/`get`.

    `maxsize=0` is unbounded; `actor_options` are the options of the actor that holds the items.
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        if not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"maxsize must be an int >= 0 (0 means unbounded), got {maxsize!r}")
        self.maxsize = maxsize
        self.actor = _QueueActor.options(**(actor_options or {})).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        return kastor.get(self.actor.qsize.remote())

    qsize = size

    def empty(self) -> bool:
        return kastor.get(self.actor.empty.remote())

    def full(self) -> bool:
        return kastor.get(self.actor.full.remote())

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Adds `item`; waits for room up to `timeout` seconds (forever if None) unless `block` is False."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if not block:
            return self.put_nowait(item)
        if not kastor.get(self.actor.put.remote(item, timeout)):
            raise Full(f"no room in the queue within {timeout}s")

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not block:
            timeout = 0
        if not await self.actor.put.remote(item, timeout):
            raise Full(f"no room in the queue within {timeout}s")

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Takes the oldest item; waits up to `timeout` seconds (forever if None) unless `block` is False."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if not block:
            return self.get_nowait()
        found, item = kastor.get(self.actor.get.remote(timeout))
        if not found:
            raise Empty(f"nothing in the queue within {timeout}s")
        return item

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        found, item = await self.actor.get.remote(0 if not block else timeout)
        if not found:
            raise Empty(f"nothing in the queue within {timeout}s")
        return item

    def put_nowait(self, item: Any) -> None:
        if not kastor.get(self.actor.put.remote(item, 0)):
            raise Full("the queue is full")

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Adds all of `items`, or none of them if they do not all fit."""
        items = list(items)
        if not kastor.get(self.actor.put_batch.remote(items)):
            raise Full(f"no room for {len(items)} items (maxsize {self.maxsize})")

    def get_nowait(self) -> Any:
        found, item = kastor.get(self.actor.get.remote(0))
        if not found:
            raise Empty("the queue is empty")
        return item

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Takes exactly `num_items` items, or none if fewer are queued."""
        if not isinstance(num_items, int) or num_items < 0:
            raise ValueError(f"num_items must be an int >= 0, got {num_items!r}")
        found, items = kastor.get(self.actor.get_batch.remote(num_items))
        if not found:
            raise Empty(f"fewer than {num_items} items in the queue")
        return items

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Ends the queue's actor: after the calls already sent to it, or at once with `force`."""
        if self.actor is None:
            return
        if force:
            kastor.kill(self.actor)
        else:
            done = self.actor.__ray_terminate__.remote()
            ready, _ = kastor.wait([done], timeout=grace_period_s)
            if not ready:
                kastor.kill(self.actor)
        self.actor = None


@kastor.remote(num_cpus=0)
class _QueueActor:
    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)

    async def qsize(self) -> int:
        return self.queue.qsize()

    async def empty(self) -> bool:
        return self.queue.empty()

    async def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, timeout: float | None) -> bool:
        if timeout == 0:
            try:
                self.queue.put_nowait(item)
            except asyncio.QueueFull:
                return False
            return True
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except TimeoutError:
            return False
        return True

    async def put_batch(self, items: list[Any]) -> bool:
        if self.queue.maxsize and self.queue.qsize() + len(items) > self.queue.maxsize:
            return False
        for item in items:
            self.queue.put_nowait(item)
        return True

    async def get(self, timeout: float | None) -> tuple[bool, Any]:
        if timeout == 0:
            try:
                return True, self.queue.get_nowait()
            except asyncio.QueueEmpty:
                return False, None
        try:
            return True, await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return False, None

    async def get_batch(self, num_items: int) -> tuple[bool, list[Any]]:
        if self.queue.qsize() < num_items:
            return False, []
        return True, [self.queue.get_nowait() for _ in range(num_items)]
