"""`multiprocessing.Pool` on a Kastor cluster, as `ray.util.multiprocessing.Pool`.

Code written for the standard library's Pool runs unchanged, with its processes spread over
the cluster: each pool process is an actor (so an `initializer` runs once per process, as
with multiprocessing), and work is sent to them in chunks, round-robin. Results come back in
order (`map`, `imap`) or as they finish (`imap_unordered`); an exception raised by `func` is
raised again by `get()`, as its own type.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import kastor


@kastor.remote
class _PoolProcess:
    def __init__(self, initializer: Callable | None, initargs: tuple) -> None:
        if initializer is not None:
            initializer(*initargs)

    def run_chunk(self, func: Callable, chunk: list, star: bool) -> list:
        return [func(*args) if star else func(args) for args in chunk]

    def run(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        return func(*args, **kwargs)


class AsyncResult:
    """The pending result of an `*_async` call."""

    def __init__(self, refs: list, assemble: Callable[[list], Any], callback: Callable | None = None,
                 error_callback: Callable | None = None):
        self._refs = refs
        self._assemble = assemble
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        threading.Thread(target=self._collect, args=(callback, error_callback), daemon=True).start()

    def _collect(self, callback: Callable | None, error_callback: Callable | None) -> None:
        try:
            self._value = self._assemble(kastor.get(self._refs))
        except BaseException as e:  # the caller sees it from get()
            self._error = e
        self._done.set()
        if self._error is None and callback is not None:
            callback(self._value)
        elif self._error is not None and error_callback is not None:
            error_callback(self._error)

    def get(self, timeout: float | None = None) -> Any:
        if not self._done.wait(timeout):
            raise TimeoutError(f"the result was not ready within {timeout}s")
        if self._error is not None:
            raise self._error
        return self._value

    def wait(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def ready(self) -> bool:
        return self._done.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError("the result is not ready yet")
        return self._error is None


class Pool:
    """The standard library's `multiprocessing.Pool`, its processes being actors on the cluster.

    `processes` defaults to the cluster's CPUs; `ray_remote_args` are the actors' options.
    """

    def __init__(self, processes: int | None = None, initializer: Callable | None = None,
                 initargs: Iterable = (), maxtasksperchild: int | None = None, context: Any = None,
                 ray_address: str | None = None, ray_remote_args: dict[str, Any] | None = None) -> None:
        if not kastor.is_initialized():
            kastor.init(address=ray_address)
        if processes is None:
            processes = max(1, int(kastor.cluster_resources().get("CPU", 1)))
        if not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be an int >= 1, got {processes!r}")
        options = {"num_cpus": 1, **(ray_remote_args or {})}
        self._processes = [_PoolProcess.options(**options).remote(initializer, tuple(initargs))
                           for _ in range(processes)]
        self._turn = itertools.cycle(range(processes))
        self._closed = False

    # ---- the standard Pool API ----

    def apply(self, func: Callable, args: tuple = (), kwds: dict | None = None) -> Any:
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable, args: tuple = (), kwds: dict | None = None,
                    callback: Callable | None = None, error_callback: Callable | None = None) -> AsyncResult:
        ref = self._next_process().run.remote(func, tuple(args), dict(kwds or {}))
        return AsyncResult([ref], lambda values: values[0], callback, error_callback)

    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        return self.map_async(func, iterable, chunksize).get()

    def map_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                  callback: Callable | None = None, error_callback: Callable | None = None) -> AsyncResult:
        return AsyncResult(self._submit(func, list(iterable), chunksize, star=False), _flatten, callback,
                           error_callback)

    def starmap(self, func: Callable, iterable: Iterable[Iterable], chunksize: int | None = None) -> list:
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(self, func: Callable, iterable: Iterable[Iterable], chunksize: int | None = None,
                      callback: Callable | None = None, error_callback: Callable | None = None) -> AsyncResult:
        items = [tuple(args) for args in iterable]
        return AsyncResult(self._submit(func, items, chunksize, star=True), _flatten, callback, error_callback)

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> Iterator:
        for ref in self._submit(func, list(iterable), chunksize, star=False):
            yield from kastor.get(ref)

    def imap_unordered(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> Iterator:
        pending = self._submit(func, list(iterable), chunksize, star=False)
        while pending:
            ready, pending = kastor.wait(pending, num_returns=1)
            yield from kastor.get(ready[0])

    def close(self) -> None:
        """No more work may be submitted; what was submitted still runs."""
        self._closed = True

    def terminate(self) -> None:
        """Stops the pool's processes now."""
        self._closed = True
        for process in self._processes:
            kastor.kill(process)
        self._processes = []

    def join(self) -> None:
        """Waits for the processes to finish the work sent to them (after close())."""
        if not self._closed:
            raise ValueError("Pool is still running: call close() or terminate() before join().")
        kastor.get([p.__ray_ready__.remote() for p in self._processes])

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    # ---- helpers ----

    def _next_process(self):
        if self._closed:
            raise ValueError("Pool not running: it was closed or terminated.")
        return self._processes[next(self._turn)]

    def _submit(self, func: Callable, items: list, chunksize: int | None, star: bool) -> list:
        if chunksize is None:  # as multiprocessing does: about four chunks per process
            chunksize, extra = divmod(len(items), len(self._processes) * 4)
            chunksize += bool(extra)
        if not isinstance(chunksize, int) or chunksize < 0:
            raise ValueError(f"chunksize must be an int >= 1, got {chunksize!r}")
        chunksize = max(chunksize, 1)
        return [self._next_process().run_chunk.remote(func, items[i:i + chunksize], star)
                for i in range(0, len(items), chunksize)]


def _flatten(chunks: list[list]) -> list:
    return [value for chunk in chunks for value in chunk]
