"""Fixtures shared by the test modules."""

import ast
import functools
import gc
import os
import sys
import threading

import kastor
import pytest


def _serialize_ast_parse() -> None:
    """Makes `ast.parse` one thread at a time in the test process, on Pythons with CPython
    gh-106905 (fixed in 3.11.8 and 3.12.1): the AST constructor's recursion counter is shared by
    all threads, so two threads parsing at once (pytest building a failure's report while a
    harness thread formats a traceback, which 3.11 does with `ast.parse` for its ^^^ markers)
    can make pytest crash with "INTERNALERROR ... SystemError: AST constructor recursion depth
    mismatch", ending the whole run instead of reporting one failed test.

    The cyclic garbage collector is off during a parse as well: a collection triggered by the
    parse's own allocations can run a finalizer on the same thread (a coroutine closed late
    raising into the unraisable hook, which formats its traceback with `ast.parse`), and that
    nested parse corrupts the outer one's counter just as another thread would. An RLock, so
    such a nested parse (should one still happen) cannot deadlock."""
    if sys.version_info >= (3, 12, 1) or (3, 11, 8) <= sys.version_info < (3, 12):
        return
    lock = threading.RLock()
    unlocked_parse = ast.parse

    @functools.wraps(unlocked_parse)
    def parse(*args, **kwargs):
        with lock:
            collecting = gc.isenabled()
            gc.disable()
            try:
                return unlocked_parse(*args, **kwargs)
            finally:
                if collecting:
                    gc.enable()

    ast.parse = parse


_serialize_ast_parse()


@pytest.fixture(scope="module")
def embedded_cluster():
    """`kastor.init()` with no address (head, node agent and workers as real local processes),
    shared by one test module; 2 CPUs, as on the CI machine."""
    info = kastor.init(num_cpus=2)
    yield info
    kastor.shutdown()


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server of this test's own, for Redis-backed heads (GCS fault tolerance)."""
    from redis_server import RedisServer
    server = RedisServer(tmp_path / "redis-data")
    server.data_dir.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With KASTOR_REQUIRE_TOOLS=1 (set by .ci/run), a test that skips for want of a tool
    (redis-server, helm, kubectl, the control plane) fails instead: CI installs every tool, so a
    skip there means an install step is missing, and a green run must not hide it. Only the
    kind suite (marked e2e; it needs Docker, which CI machines lack) may still skip. An expected
    failure (xfail, reported as a skip with `wasxfail`) is not a skip and stays what it is."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("KASTOR_REQUIRE_TOOLS") == "1" \
            and item.get_closest_marker("e2e") is None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under KASTOR_REQUIRE_TOOLS=1, where every tool must be present: {reason}"
