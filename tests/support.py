"""Polling helpers shared by the tests: they wait on a condition with a deadline, never a bare sleep."""

import os
import time

import pytest

DEADLINE_S = 30.0


def wait_until(predicate, what: str, timeout: float = DEADLINE_S) -> None:
    """Polls `predicate` until it is true; fails the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.05)


def process_gone(pid: int) -> bool:
    """True once `pid` no longer exists (reaped or never existed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class Captured:
    """Everything this process has written to stdout and stderr so far in a test (from capsys)."""

    def __init__(self, capsys):
        self._capsys = capsys
        self.out = self.err = ""

    def read(self) -> "Captured":
        got = self._capsys.readouterr()
        self.out += got.out
        self.err += got.err
        return self

    def wait_out(self, text: str) -> None:
        self._wait(text, "out")

    def wait_err(self, text: str) -> None:
        self._wait(text, "err")

    def _wait(self, text: str, stream: str) -> None:
        try:
            wait_until(lambda: text in getattr(self.read(), stream), f"{text!r} on std{stream}")
        except pytest.fail.Exception as e:
            pytest.fail(f"{e}; it has {getattr(self, stream)[-2000:]!r}")
