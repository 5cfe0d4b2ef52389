"""A driver freezes its startup objects for the cyclic collector once connected, and lets them
go on shutdown (runtime/startup_gc.py); KASTOR_GC_FREEZE=0 turns it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from support import DEADLINE_S

_SCRIPT = r"""
import gc, json, weakref
import kastor

class Node:
    pass

before = gc.get_freeze_count()
kastor.init(num_cpus=1)
during = gc.get_freeze_count()
a = Node(); a.me = a  # a cycle made after init: still collected
probe = weakref.ref(a)
del a
gc.collect()
collected = probe() is None
kastor.get(kastor.put(1))
kastor.shutdown()
print(json.dumps({"before": before, "during": during, "after": gc.get_freeze_count(), "collected": collected}))
"""


def _run(env_value: str | None) -> dict:
    env = dict(os.environ)
    env.pop("KASTOR_GC_FREEZE", None)
    if env_value is not None:
        env["KASTOR_GC_FREEZE"] = env_value
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True,
                         timeout=DEADLINE_S * 4)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_connected_driver_freezes_its_startup_objects_and_shutdown_unfreezes_them():
    got = _run(None)
    assert got["before"] == 0
    assert got["during"] > 1000, got  # the runtime, grpc and protobuf: tens of thousands of objects
    assert got["after"] == 0
    assert got["collected"]


def test_kastor_gc_freeze_0_turns_it_off():
    got = _run("0")
    assert got["during"] == 0 and got["after"] == 0 and got["collected"]
