"""Spreading work over a fixed set of actors with ``ActorPool``.

Why this exists: tasks are stateless, but sometimes each worker needs costly
setup (a loaded model, an open connection) that should happen once and then
serve many items. ``kastor.util.ActorPool`` hands items to a fixed set of such
actors, giving each one a new item as soon as it is free. This shows its four
ways of use:

* ``map``            - results in input order;
* ``map_unordered``  - results as soon as each is ready;
* ``submit`` / ``get_next`` / ``has_next`` - feed and drain by hand.

Run it with ``python examples/actor_pool.py``.
"""

import os
import time

import kastor
from kastor.util import ActorPool


@kastor.remote
class Worker:
    def __init__(self, name: str):
        # Stand-in for expensive one-time setup.
        self.name = name
        self.handled = 0

    def square(self, x: int) -> int:
        self.handled += 1
        return x * x

    def slow_square(self, x: int, delay: float) -> tuple[int, int]:
        time.sleep(delay)
        self.handled += 1
        return x, x * x

    def stats(self) -> tuple[str, int, int]:
        return self.name, self.handled, os.getpid()


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def main() -> None:
    kastor.init()
    try:
        workers = [Worker.remote(f"worker-{i}") for i in range(3)]
        pool = ActorPool(workers)

        print("== map: results in input order ==")
        squares = list(pool.map(lambda actor, x: actor.square.remote(x), range(10)))
        print(squares)
        check(squares == [x * x for x in range(10)], "map should keep input order")

        print("== map_unordered: results as they finish ==")
        # Bigger numbers finish sooner here, so the completion order differs from the input order.
        inputs = [1, 2, 3, 4, 5, 6]
        delays = {x: 0.1 * (7 - x) for x in inputs}
        done = list(pool.map_unordered(lambda actor, x: actor.slow_square.remote(x, delays[x]), inputs))
        print("finished in order:", [x for x, _ in done])
        check(sorted(done) == [(x, x * x) for x in inputs], "map_unordered should return every result")

        print("== submit / has_next / get_next ==")
        for x in range(5):
            pool.submit(lambda actor, v: actor.square.remote(v), x)
        results = []
        while pool.has_next():
            results.append(pool.get_next())
        print(results)
        check(results == [0, 1, 4, 9, 16], "get_next returns results in submission order")
        check(not pool.has_next(), "the pool should be drained")

        print("== who did the work ==")
        stats = kastor.get([w.stats.remote() for w in workers])
        for name, handled, pid in stats:
            print(f"{name} (pid {pid}) handled {handled} items")
        check(sum(handled for _, handled, _ in stats) == 10 + 6 + 5, "every item is handled exactly once")
        check(len({pid for _, _, pid in stats}) == 3, "each actor runs in its own process")
    finally:
        kastor.shutdown()
    print("actor pool example OK")


if __name__ == "__main__":
    main()
