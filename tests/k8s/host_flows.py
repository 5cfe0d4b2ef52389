"""What the end-to-end tests that run the operator on the host against a `RealCluster` share
(test_redis_statefulset, test_durable_state_pvc): a wait whose failure tells the namespace's
story, and a driver program run on the host."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import TypeVar

from .real_cluster import RealCluster

T = TypeVar("T")


def wait_explained(c: RealCluster, predicate: Callable[[], T], what: str, timeout: float, namespace: str,
                   kinds: str) -> T:
    """c.wait, and on timeout the `kinds` objects (`kubectl get` names, comma-separated) and
    events of `namespace`, and the tail of the operator's log (`operator.log` in c.workdir)."""
    try:
        return c.wait(predicate, what, timeout)
    except AssertionError as e:
        objects = c.kubectl("get", kinds, "-n", namespace, "-o", "wide", check=False)
        events = c.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
        log = (c.workdir / "operator.log").read_text(errors="replace")[-4000:]
        raise AssertionError(f"{e}\n--- objects:\n{objects.stdout}{objects.stderr}\n--- events:\n"
                             f"{chr(10).join(events.splitlines()[-30:])}\n--- operator log:\n{log}") from None


def run_driver(c: RealCluster, head_address: str, token: str, code: str) -> str:
    """A driver on the host (outside the pod network) connected to `head_address`, a head
    Service's name resolving to its host-side address; returns what it printed."""
    program = f"import kastor\nkastor.init(address={head_address!r})\n" + textwrap.dedent(code)
    done = subprocess.run(c.command([sys.executable, "-c", program]), env={**os.environ, "KASTOR_TOKEN": token},
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"driver failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout
