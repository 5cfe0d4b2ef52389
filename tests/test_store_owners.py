"""A dead owner's objects leave the node's store (issue 15, item 8): a driver killed after a
put() and a task returning a large value must not leave its files in /dev/shm for the node's
life. The sweep's rules (two refusals in a row; slow is not dead) are tested on their own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest
from kastor.runtime import store_owners
from support import cli_head, wait_until
from test_leases import _node

TOKEN = "store-owners-token"

PUT_THEN_WAIT = """
import sys, time, kastor
import numpy as np
kastor.init()

@kastor.remote
def big():
    return np.ones(4 * 1024 * 1024, dtype=np.uint8)  # a task return over the inline limit: a store file

keep = [kastor.put(np.zeros(4 * 1024 * 1024, dtype=np.uint8)), big.remote()]
kastor.get(keep[1], timeout=120)
print("stored", flush=True)
time.sleep(600)
"""


def _files(store_dir: str) -> dict[str, list[str]]:
    """owner address -> the object files under it."""
    return {address: sorted(n for n in os.listdir(path) if n != store_owners.OWNER_FILE)
            for address, path in store_owners.owners(store_dir).items()}


@pytest.fixture
def head(tmp_path):
    with cli_head(tmp_path, TOKEN, "--client-port", "-1", KASTOR_DEAD_OWNER_SWEEP_S="0.5") as h:
        yield h


def _start_driver(head: dict, code: str) -> subprocess.Popen:
    env = dict(head["env"], KASTOR_ADDRESS=head["head"])
    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert driver.stdout.readline().strip() == "stored", driver.stderr.read()
    return driver


LIVE = PUT_THEN_WAIT.replace("time.sleep(600)", textwrap.dedent("""
    sys.stdin.readline()
    print(int(kastor.get(keep[0], timeout=60).sum()), int(kastor.get(keep[1], timeout=60).sum()), flush=True)
"""))


def test_a_killed_drivers_objects_are_freed_and_a_live_ones_stay(head):
    """Both drivers put a value and get a large task result; one is killed. Its two store files
    go (the node agent's sweep found it refusing twice), the live driver's stay and still read."""
    store_dir = _node(head)["object_store_dir"]
    live = _start_driver(head, LIVE)
    killed = None
    try:
        (live_owner,) = _files(store_dir)
        assert len(_files(store_dir)[live_owner]) == 2, _files(store_dir)  # its put and its task's return
        killed = _start_driver(head, PUT_THEN_WAIT)
        (dead_owner,) = set(_files(store_dir)) - {live_owner}
        assert len(_files(store_dir)[dead_owner]) == 2, _files(store_dir)
        killed.kill()
        killed.communicate(timeout=60)
        wait_until(lambda: dead_owner not in _files(store_dir), f"the killed driver's objects gone from {store_dir}")
        assert len(_files(store_dir).get(live_owner, [])) == 2, _files(store_dir)
        live.stdin.write("\n")
        live.stdin.flush()
        assert live.stdout.readline().split() == ["0", str(4 * 1024 * 1024)], live.stderr.read()
    finally:
        for driver in (live, killed):
            if driver is not None and driver.poll() is None:
                driver.kill()
                driver.communicate(timeout=60)


class _Owners:
    """Answers for DeadOwnerSweep: address -> True (alive), False (refused), None (slow)."""

    def __init__(self) -> None:
        self.answers: dict[str, bool | None] = {}

    async def alive(self, address: str) -> bool | None:
        return self.answers[address]


def _write(store_dir: str, owner: str, name: str) -> str:
    path = store_owners.object_path(store_dir, owner, name)
    with open(path, "wb") as f:
        f.write(b"x")
    return path


def test_the_sweep_frees_an_owner_only_after_two_refusals_in_a_row(tmp_path):
    store = str(tmp_path)
    owners = _Owners()
    sweep = store_owners.DeadOwnerSweep(store, owners.alive)
    dead, slow, live = (_write(store, a, "ab" * 20) for a in ("10.0.0.1:1", "10.0.0.2:2", "[::1]:3"))
    rooted = _write(store, "", "cd" * 20)  # no owner named: never swept
    owners.answers = {"10.0.0.1:1": False, "10.0.0.2:2": None, "[::1]:3": True}
    assert asyncio.run(sweep.sweep()) == []  # one refusal is not enough
    owners.answers["10.0.0.1:1"] = True  # it answered again: the count starts over
    assert asyncio.run(sweep.sweep()) == []
    owners.answers["10.0.0.1:1"] = False
    assert asyncio.run(sweep.sweep()) == []
    assert asyncio.run(sweep.sweep()) == ["10.0.0.1:1"]
    assert not os.path.exists(dead) and not os.path.exists(os.path.dirname(dead))
    assert all(os.path.exists(p) for p in (slow, live, rooted))
    for _ in range(3):  # slow is never dead
        asyncio.run(sweep.sweep())
    assert os.path.exists(slow)


def test_only_object_files_of_the_store_are_served_or_freed(tmp_path):
    store = str(tmp_path / "store")
    os.makedirs(store)
    owned = _write(store, "10.0.0.1:1", "ab" * 20)
    assert store_owners.in_store(store, owned) == os.path.realpath(owned)
    assert store_owners.in_store(store, os.path.join(store, "ef" * 20)) is not None
    for outside in (str(tmp_path / "x"), os.path.join(os.path.dirname(owned), store_owners.OWNER_FILE),
                    os.path.join(store, "not-an-owner", "ab" * 20), os.path.join(store, "..", "x"),
                    os.path.join(os.path.dirname(owned), "sub", "ab" * 20)):
        assert store_owners.in_store(store, outside) is None, outside
