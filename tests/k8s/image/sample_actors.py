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
