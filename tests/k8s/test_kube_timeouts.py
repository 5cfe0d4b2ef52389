"""Every API call the operator makes has a deadline.

The kubernetes client waits for ever by default. An API server (or a proxy in front of it) that
accepts a connection and never answers would then hold the reconcile that made the call, and
with it the resource's lock: its resync and its pod events would wait behind it for good, and a
DetachedActor whose pod was deleted would never get a new one. Here the API server is a socket
that accepts and stays silent; each call must fail within its timeout instead of hanging.
"""

from __future__ import annotations

import socket
import threading
import time

import kubernetes
import pytest
from kastor.operator.kube import Kube
from urllib3.exceptions import ReadTimeoutError


@pytest.fixture
def silent_api_server():
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_silent_api_server_fails_the_call_instead_of_hanging_it(silent_api_server):
    config = kubernetes.client.Configuration()
    config.host = silent_api_server
    config.retries = False
    kube = Kube(kubernetes.client.ApiClient(config), request_timeout=(1.0, 1.0))
    calls = [lambda: kube.list_pods("default", {"app": "x"}),
             lambda: kube.get_custom("detachedactors", "default", "ledger"),
             lambda: kube.create_pod("default", {"metadata": {"name": "p"}})]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            call()
        assert time.monotonic() - started < 10, "the call waited far beyond its read timeout"
