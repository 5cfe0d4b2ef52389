"""A fixed set of actors shared by many tasks, with ``ray.util.ActorPool``'s API and semantics."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import kastor

V = TypeVar("V")
ActorHandle = Any
# fn(actor, value) starts the work on that actor and returns the ObjectRef of its result.
SubmitFn = Callable[[ActorHandle, V], Any]

_TIMEOUT_MSG = "Timed out waiting for result"


class ActorPool:
    """Hands each submitted value to an idle actor; an actor stays busy until its result is taken.

    Example::

        pool = ActorPool([Doubler.remote(), Doubler.remote()])
        list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3]))  # [2, 4, 6]
    """

    def __init__(self, actors: Iterable[ActorHandle]) -> None:
        self._idle_actors: list[ActorHandle] = list(actors)
        self._pending_submits: deque[tuple[SubmitFn, Any]] = deque()  # submits waiting for an idle actor
        self._future_to_actor: dict[Any, tuple[int, ActorHandle]] = {}  # ref -> (submit index, actor)
        self._index_to_future: dict[int, Any] = {}  # submit index -> ref, so get_next() can keep order
        self._next_task_index = 0
        self._next_return_index = 0

    def map(self, fn: SubmitFn, values: Iterable[V]) -> Iterator[Any]:
        """Submits every value now; the iterator yields results in the order of `values`.

        Results still uncollected from earlier submits are dropped first, so they cannot
        leak into this iterator.
        """
        self._drop_uncollected()
        for v in values:
            self.submit(fn, v)
        return self._results(self.get_next)

    def map_unordered(self, fn: SubmitFn, values: Iterable[V]) -> Iterator[Any]:
        """Like map(), but yields each result as soon as it is ready, so one slow value holds up nothing."""
        self._drop_uncollected()
        for v in values:
            self.submit(fn, v)
        return self._results(self.get_next_unordered)

    def submit(self, fn: SubmitFn, value: V) -> None:
        """Runs fn(actor, value) on an idle actor, or queues it until get_next*() frees one."""
        if not self._idle_actors:
            self._pending_submits.append((fn, value))
            return
        actor = self._idle_actors.pop()
        try:
            ref = fn(actor, value)
        except BaseException:
            self._idle_actors.append(actor)  # the actor never got the work
            raise
        self._future_to_actor[ref] = (self._next_task_index, actor)
        self._index_to_future[self._next_task_index] = ref
        self._next_task_index += 1

    def has_next(self) -> bool:
        """Whether a submitted task's result is still to be taken."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """Returns the next result in submission order.

        On timeout raises TimeoutError and keeps the task for a later call, unless
        `ignore_if_timedout`: then the task is dropped and its actor counted idle again.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        ref = self._index_to_future[self._next_return_index]
        if timeout is not None and not kastor.wait([ref], timeout=timeout)[0]:
            raise self._timed_out(ref, ignore_if_timedout)
        return self._collect(ref)

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """Returns whichever result is ready first; timeouts behave as in get_next(),
        except that `ignore_if_timedout` drops the oldest running task.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        ready, _ = kastor.wait(list(self._future_to_actor), num_returns=1, timeout=timeout)
        if not ready:
            raise self._timed_out(next(iter(self._future_to_actor)), ignore_if_timedout)
        return self._collect(ready[0])

    def has_free(self) -> bool:
        """Whether a submit() would start at once (queued submits claim freed actors first)."""
        return bool(self._idle_actors) and not self._pending_submits

    def push(self, actor: ActorHandle) -> None:
        """Adds an actor; it takes a queued submit at once if there is one."""
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)

    def pop_idle(self) -> ActorHandle | None:
        """Removes and returns an idle actor, or None: an actor with work queued for it is not idle."""
        return self._idle_actors.pop() if self.has_free() else None

    def _take(self, ref: Any) -> ActorHandle:
        index, actor = self._future_to_actor.pop(ref)
        del self._index_to_future[index]
        self._next_return_index = max(self._next_return_index, index + 1)
        return actor

    def _collect(self, ref: Any) -> Any:
        actor = self._take(ref)
        try:
            return kastor.get(ref)
        except kastor.exceptions.ActorDiedError:
            actor = None  # a dead actor would fail every task handed to it
            raise
        finally:
            self._return_actor(actor)

    def _timed_out(self, ref: Any, ignore: bool) -> TimeoutError:
        if not ignore:
            return TimeoutError(_TIMEOUT_MSG)
        # Like Ray, the actor is counted idle although the dropped task may still be running on it.
        self._return_actor(self._take(ref))
        return TimeoutError(f"{_TIMEOUT_MSG}. The task {ref} has been ignored.")

    def _return_actor(self, actor: ActorHandle | None) -> None:
        if actor is not None:
            self._idle_actors.append(actor)
        while self._pending_submits and self._idle_actors:
            self.submit(*self._pending_submits.popleft())

    def _results(self, get_one: Callable[[], Any]) -> Iterator[Any]:
        while self.has_next():
            yield get_one()

    def _drop_uncollected(self) -> None:
        while self.has_next():
            with contextlib.suppress(Exception):  # nobody asked for these results, failures included
                self.get_next_unordered(timeout=0, ignore_if_timedout=True)
