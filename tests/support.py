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
