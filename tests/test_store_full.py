"""With spilling off, a full object store fails the put (or the task's get) with
ObjectStoreFullError; no object is ever stored truncated. (With spilling on, the default, such
objects go to disk instead: test_spilling.)

The object store is the node's /dev/shm. The cluster test runs a driver, with its embedded
cluster, in a user and mount namespace of its own with a 16 MiB tmpfs over /dev/shm, so
the store really fills up (and no more memory than that is used); tests that cannot make
such a namespace here are skipped. The short-write test needs no namespace: a file-size
limit makes the kernel stop a write part-way, as a full tmpfs does.
"""

import os
import shutil
import subprocess
import sys

import pytest

STORE_MIB = 16

DRIVER = f'''
import os

import kastor
import numpy as np
from kastor import exceptions

kastor.init(num_cpus=1)


@kastor.remote
def make(nbytes):
    return np.ones(nbytes // 8)


too_big = {STORE_MIB + 8} * 2**20
try:
    kastor.put(np.ones(too_big // 8))
except exceptions.ObjectStoreFullError as e:
    print("PUT FULL:", e)
else:
    print("PUT STORED")

try:
    kastor.get(make.remote(too_big), timeout=120)
except exceptions.ObjectStoreFullError as e:
    print("RESULT FULL:", isinstance(e, exceptions.TaskError), e)
else:
    print("RESULT STORED")

# Held objects fill the store until one more does not fit.
held = [kastor.put(np.ones(2**20 // 8) * i) for i in range(4)]  # 4 MiB in all
try:
    kastor.put(np.ones(({STORE_MIB} - 2) * 2**20 // 8))
except exceptions.ObjectStoreFullError:
    print("SECOND FULL")
print("HELD OK", [float(kastor.get(r, timeout=60)[0]) for r in held])
del held
arr = kastor.get(kastor.put(np.arange(2**20)), timeout=60)  # 8 MiB fits again
print("AFTER OK", int(arr.sum()) == (2**20 - 1) * 2**20 // 2)
leftovers = [f for d in os.listdir("/dev/shm") for f in os.listdir(os.path.join("/dev/shm", d))
             if f.endswith(".tmp")]
print("LEFTOVERS", leftovers)
kastor.shutdown()
'''


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def run_with_small_store(script, store_mib: int, timeout: float, *args: str, mounts: str = "",
                         **run: object) -> subprocess.CompletedProcess:
    """Runs the Python file `script` (with `args`) in new user and mount namespaces whose /dev/shm,
    the object store, is a tmpfs of `store_mib` MiB, after the shell commands `mounts` (each ending
    in `&&`); `run` goes to subprocess.run. Skips the test where such namespaces cannot be made."""
    if not _namespaces_work():
        pytest.skip("needs `unshare -rm` (user and mount namespaces) to give the store a small tmpfs")
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size={store_mib}m tmpfs /dev/shm && {mounts} exec "$0" "$@"',
         sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout, **run)


def test_full_store_fails_put_and_the_tasks_get(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    result = run_with_small_store(script, STORE_MIB, 300, cwd=tmp_path,
                                  env=dict(os.environ, KASTOR_OBJECT_SPILLING="0"))
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "PUT FULL: Could not store an object of" in out, out
    assert "in the object store at /dev/shm/" in out and "larger than the whole store" in out, out
    assert "Spilling to disk is off for this store: run its node agent with KASTOR_OBJECT_SPILLING=1" in out, out
    assert "RESULT FULL: True" in out, out
    assert "SECOND FULL" in out, out
    assert "HELD OK [0.0, 1.0, 2.0, 3.0]" in out, out
    assert "AFTER OK True" in out, out
    assert "LEFTOVERS []" in out, out


SHORT_WRITE = '''
import os, resource, signal, sys
import numpy as np
from kastor.exceptions import ObjectStoreFullError
from kastor.runtime import serialization

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, resource.RLIM_INFINITY))
path = os.path.join(sys.argv[1], "obj")
try:
    serialization.serialize(np.ones(4 * 2**20 // 8)).write_file(path)
except ObjectStoreFullError as e:
    print("FULL:", e)
else:
    print("WROTE", os.path.getsize(path))
print("FILES", sorted(os.listdir(sys.argv[1])))
'''


def test_a_short_write_never_leaves_a_truncated_object(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    result = subprocess.run([sys.executable, "-c", SHORT_WRITE, str(store)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FULL: Could not store an object of" in result.stdout, result.stdout
    assert "FILES []" in result.stdout, result.stdout
