"""A short tour of Kastor: tasks, actors, named actors, errors and pools.

Why this exists: it is the first thing to run on a fresh machine
(``python examples/demo.py``). ``kastor.init()`` with no arguments starts a
small local cluster on this machine, so nothing else needs to be running.
Every call here is Ray core's API, so the same code runs on Ray (where
``kastor.exceptions.TaskError`` is spelled ``RayTaskError``). It finishes in a
few seconds and exits 0 when every step behaved as expected, non-zero if not.
"""

import time

import kastor
from kastor.util import ActorPool


@kastor.remote
def square(x: int) -> int:
    return x * x


@kastor.remote
def after(delay: float, value: str) -> str:
    time.sleep(delay)
    return value


@kastor.remote
def total_length(words: list[str]) -> int:
    return sum(len(w) for w in words)


@kastor.remote
def parse_age(text: str) -> int:
    age = int(text)  # raises ValueError for "forty-two"
    if age < 0:
        raise ValueError(f"age cannot be negative: {age}")
    return age


@kastor.remote
class Counter:
    def __init__(self, start: int = 0):
        self.value = start

    def increment(self, by: int = 1) -> int:
        self.value += by
        return self.value

    def get(self) -> int:
        return self.value


@kastor.remote
class Scaler:
    def __init__(self, factor: int):
        self.factor = factor  # stands in for costly setup done once per actor

    def scale(self, x: int) -> int:
        return x * self.factor


@kastor.remote
def record_visit(page: str) -> int:
    # Tasks can find a named actor on their own; no handle needs passing in.
    visits = kastor.get_actor("visits")
    return kastor.get(visits.increment.remote())


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def step(title: str) -> None:
    print(f"\n-- {title}")


def main() -> None:
    started = time.perf_counter()
    kastor.init()
    try:
        step("1. a remote task")
        ref = square.remote(7)
        print("square.remote(7) gave a reference; kastor.get(ref) =", kastor.get(ref))
        check(kastor.get(ref) == 49, "7 squared is 49")

        step("2. fan-out: many tasks at once")
        refs = [square.remote(i) for i in range(20)]
        squares = kastor.get(refs)
        print("squares of 0..19 sum to", sum(squares))
        check(squares == [i * i for i in range(20)], "results come back in the order asked")

        # kastor.wait returns as soon as some results are ready.
        refs = [after.remote(1.0, "slow"), after.remote(0.01, "quick")]
        ready, not_ready = kastor.wait(refs, num_returns=1, timeout=10)
        print(f"kastor.wait: {kastor.get(ready)} ready first, {len(not_ready)} still running")
        check(kastor.get(ready) == ["quick"], "the quick task finishes first")

        # kastor.put stores a value once; tasks given the reference receive the value itself.
        words_ref = kastor.put(["tasks", "actors", "objects"] * 1000)
        lengths = kastor.get([total_length.remote(words_ref) for _ in range(3)])
        print("kastor.put shared one list with 3 tasks:", lengths)
        check(lengths == [18_000] * 3, "each task sees the whole list")

        step("3. an actor with state")
        counter = Counter.remote(start=10)
        for _ in range(5):
            counter.increment.remote()
        print("after 5 increments the counter holds", kastor.get(counter.get.remote()))
        check(kastor.get(counter.get.remote()) == 15, "an actor runs its calls in order")

        step("4. a named actor")
        visits = Counter.options(name="visits").remote()
        counts = kastor.get([record_visit.remote(page) for page in ["/", "/docs", "/about", "/"]])
        print(f"4 tasks recorded visits through kastor.get_actor('visits'): {sorted(counts)}")
        check(sorted(counts) == [1, 2, 3, 4], "each visit is counted once")
        check(kastor.get(visits.get.remote()) == 4, "the named actor holds the total")

        step("5. errors travel back to the caller")
        try:
            kastor.get(parse_age.remote("forty-two"))
        except ValueError as err:
            # The error is the task's own ValueError, and also a kastor TaskError
            # carrying where it happened.
            print("caught ValueError from a task:", str(err).strip().splitlines()[-1])
            check(isinstance(err, kastor.exceptions.TaskError), "task errors are also TaskErrors")
        else:
            raise AssertionError("parsing 'forty-two' should fail")
        check(kastor.get(parse_age.remote("42")) == 42, "a good input still works")

        step("6. an ActorPool sharing work among 3 actors")
        pool = ActorPool([Scaler.remote(10) for _ in range(3)])
        results = list(pool.map(lambda actor, x: actor.scale.remote(x), range(1, 9)))
        print("pool.map scaled 1..8 by 10:", results)
        check(results == [10 * x for x in range(1, 9)], "pool.map keeps the input order")
    finally:
        kastor.shutdown()
    print(f"\nDemo finished in {time.perf_counter() - started:.1f}s. All checks passed.")


if __name__ == "__main__":
    main()
