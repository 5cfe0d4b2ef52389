"""Actor classes "baked into" the test image (the kubelet harness puts this folder on PYTHONPATH)."""


class Counter:
    """A detached counter: its state resets when the actor restarts (the constructor runs again)."""

    def __init__(self, start: int = 0, step: int = 1):
        self.value = start
        self.step = step

    def incr(self) -> int:
        self.value += self.step
        return self.value

    def pid(self) -> int:
        import os
        return os.getpid()


class Broken:
    def __init__(self):
        raise RuntimeError("Broken's constructor always fails")


class FailsWhenReleased:
    """Its constructor raises, but only once the file `release` exists: the test picks the moment."""

    def __init__(self, release: str):
        import os
        import time
        deadline = time.monotonic() + 300
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.05)
        raise RuntimeError("FailsWhenReleased's constructor was released, and fails")


class Echo:
    """Hands back what it is given (objects of any size, both ways) and streams a generator:
    what a driver pod checks on a real cluster."""

    def echo(self, value):
        return value

    def blob(self, size: int) -> bytes:
        return bytes(range(256)) * (size // 256)

    def count(self, n: int):
        for i in range(n):
            yield i * 10
