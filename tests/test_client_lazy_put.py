"""A notebook's large put stays on the notebook's disk until the cluster needs it
(runtime/lazy_puts.py): every way the ref can reach a worker uploads it first, once, with
the right bytes; a freed put goes from the notebook's disk and, once uploaded, from the node's.

A real head with a client port (`kastor start --head`), a real notebook (`kastor.init` with
kastor://); the node's store is found on disk by the object's id, which names its file.
"""

from __future__ import annotations

import gc
import glob
import os
import shutil
import subprocess
import sys

import kastor
import numpy as np
import pytest
from kastor.runtime import client_copies, config, context, launcher, serialization, transport
from support import DEADLINE_S, cli_head, wait_until

TOKEN = "lazy-put-test-" + os.urandom(8).hex()
N = 2 * 2**20  # 16 MiB of int64: stored, not inline


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    client_port = launcher.free_port()
    with cli_head(tmp_path_factory.mktemp("sessions"), TOKEN, "--client-port", str(client_port)):
        kastor.init(f"kastor://127.0.0.1:{client_port}", token=TOKEN)
        yield f"kastor://127.0.0.1:{client_port}"
        kastor.shutdown()


def _node_files(ref: kastor.ObjectRef) -> list[str]:
    """The node's store files of the object (named by its id, under the node's store folder)."""
    root = config.default_store_root()
    found = glob.glob(os.path.join(root, "kastor-*", "**", ref.hex()), recursive=True)
    return [p for p in found if client_copies.PREFIX not in p]  # the notebook's copies may share the root


def _local_files(ref: kastor.ObjectRef) -> list[str]:
    """The notebook's local copies of the object (named by its id, in its copies folder)."""
    return glob.glob(os.path.join(client_copies.root(), "kastor-client-copies-*", ref.hex()))


def _checksum(x) -> int:
    if isinstance(x, (list, tuple)):
        return sum(_checksum(v) for v in x)
    if isinstance(x, dict):
        return sum(_checksum(v) for v in x.values())
    if isinstance(x, kastor.ObjectRef):
        return _checksum(kastor.get(x))
    return int(np.asarray(x, dtype=np.int64).sum())


@kastor.remote
def checksum(x) -> int:
    return _checksum(x)


@kastor.remote
class Holder:
    def __init__(self, x=None):
        self.sum = _checksum(x) if x is not None else 0

    def initial(self) -> int:
        return self.sum

    def check(self, x) -> int:
        return _checksum(x)


def _value(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, N, dtype=np.int64)


def test_a_put_stays_local_until_the_cluster_needs_it(notebook):
    value = _value(1)
    ref = kastor.put(value)
    assert _local_files(ref), "the put kept no local copy"
    assert np.array_equal(kastor.get(ref), value)
    assert _node_files(ref) == [], "a put nobody in the cluster used was uploaded"
    assert kastor.get(checksum.remote(ref), timeout=DEADLINE_S) == int(value.sum())
    (uploaded,) = _node_files(ref)
    # Used again (top level and nested): not uploaded again, and the notebook still reads its copy.
    assert kastor.get(checksum.remote([ref]), timeout=DEADLINE_S) == int(value.sum())
    assert _node_files(ref) == [uploaded]
    assert np.array_equal(kastor.get(ref), value)


@pytest.mark.parametrize("how", ["top-level", "nested in a list", "inside another put", "actor creation",
                                 "nested in an actor creation", "actor method", "nested in an actor method"])
def test_every_way_a_ref_reaches_a_worker_uploads_it_first(notebook, how):
    value = _value(hash(how) % 1000)
    ref = kastor.put(value)
    assert _node_files(ref) == []
    if how == "top-level":
        got = checksum.remote(ref)
    elif how == "nested in a list":
        got = checksum.remote([ref, {"again": ref}])
        value = np.concatenate([value, value])
    elif how == "inside another put":
        got = checksum.remote(kastor.put({"inner": [ref]}))
    elif how == "actor creation":
        got = Holder.remote(ref).initial.remote()
    elif how == "nested in an actor creation":
        got = Holder.remote({"x": ref}).initial.remote()
    elif how == "actor method":
        got = Holder.remote().check.remote(ref)
    else:
        got = Holder.remote().check.remote((ref,))
    assert kastor.get(got, timeout=DEADLINE_S) == int(value.sum())
    assert len(_node_files(ref)) == 1


def test_freeing_a_put_frees_the_local_copy_and_the_nodes(notebook):
    never_used = kastor.put(_value(2))
    local = _local_files(never_used)
    assert local
    del never_used
    gc.collect()
    wait_until(lambda: not any(os.path.exists(p) for p in local), "the local copy of a freed put to go")

    used = kastor.put(_value(3))
    assert kastor.get(checksum.remote(used), timeout=DEADLINE_S) > 0
    local, node = _local_files(used), _node_files(used)
    assert local and node
    del used
    gc.collect()
    wait_until(lambda: not any(os.path.exists(p) for p in local + node),
               "both the local and the node's copy of a freed, uploaded put to go")


def test_lazy_puts_can_be_turned_off(notebook, monkeypatch):
    """KASTOR_CLIENT_LAZY_PUT=0 (read when the client connects) uploads at put(), as Ray Client."""
    core = context.core
    monkeypatch.setenv("KASTOR_CLIENT_LAZY_PUT", "0")
    eager = transport.choose(core.transport.gateway)
    location = eager.store_put(core, serialization.serialize(_value(4)), os.urandom(20), core.address)
    assert location.node_id != core.node_id and os.path.exists(location.path)
    core.run(eager.close())


GRPC_NOTEBOOK = """
import sys
import kastor, numpy as np
kastor.init(sys.argv[1], token=sys.argv[2])
value = np.arange(3 * 2**20, dtype=np.int64)  # 24 MiB: several gRPC chunks
ref = kastor.put(value)
print("TASK", kastor.get(kastor.remote(lambda a: int(a.sum())).remote(ref), timeout=120) == int(value.sum()))
print("LOCAL", np.array_equal(kastor.get(ref), value))
kastor.shutdown()
"""


def test_a_deferred_upload_takes_grpc_where_the_frame_relay_is_off(notebook, tmp_path):
    """Without the frame relay (KASTOR_FRAMED_CALLS=0) the upload goes by gRPC PutObject, in
    chunks read from the local copy (lazy_puts.StoredFrame), and arrives whole."""
    script = tmp_path / "grpc_notebook.py"
    script.write_text(GRPC_NOTEBOOK)
    result = subprocess.run([sys.executable, str(script), notebook, TOKEN], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, KASTOR_FRAMED_CALLS="0"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "TASK True" in result.stdout and "LOCAL True" in result.stdout, result.stdout + result.stderr[-3000:]


FULL_STORE_MIB = 16
FULL_STORE_SCRIPT = f'''
import os, subprocess, sys
import kastor, numpy as np
from kastor import exceptions
from kastor.runtime import launcher

token, port, client_port = "full-" + os.urandom(4).hex(), launcher.free_port(), launcher.free_port()
env = dict(os.environ, KASTOR_TOKEN=token, KASTOR_OBJECT_SPILLING="0")
head = subprocess.Popen([sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--block", "--port", str(port),
                         "--num-cpus", "1", "--client-port", str(client_port)], env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
assert "started" in head.stdout.readline()
try:
    kastor.init(f"kastor://127.0.0.1:{{client_port}}", token=token)

    @kastor.remote
    def nbytes(x):
        return len(x) if isinstance(x, list) else x.nbytes

    ref = kastor.put(np.ones({FULL_STORE_MIB + 8} * 2**20 // 8))
    print("PUT OK", kastor.get(ref).nbytes)
    for label, args in (("TOP", ref), ("NESTED", [ref])):
        try:
            nbytes.remote(args)
        except exceptions.ObjectStoreFullError as e:
            print(label, "FULL:", e)
        else:
            print(label, "SUBMITTED")
    small = kastor.put(np.ones(2**20 // 8))
    print("SMALL", kastor.get(nbytes.remote(small), timeout=120))
    kastor.shutdown()
finally:
    head.terminate()
    head.wait(60)
'''


def test_an_upload_that_does_not_fit_fails_the_submission_that_needed_it(tmp_path):
    """The node's store is a 16 MiB tmpfs (a user and mount namespace of this test's own)."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
            capture_output=True, timeout=30).returncode != 0:
        pytest.skip("needs `unshare -rm` (user and mount namespaces) to give the store a small tmpfs")
    script = tmp_path / "notebook.py"
    script.write_text(FULL_STORE_SCRIPT)
    env = dict(os.environ, KASTOR_SESSION_ROOT=str(tmp_path / "sessions"))
    env.pop("KASTOR_ADDRESS", None)
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c",
         f'mount -t tmpfs -o size={FULL_STORE_MIB}m tmpfs /dev/shm && exec "$0" "$1"', sys.executable, str(script)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert f"PUT OK {(FULL_STORE_MIB + 8) * 2**20}" in out, out
    assert "TOP FULL: Could not upload a" in out and "does not fit in node" in out, out
    assert "stays on this client until the cluster first needs it" in out, out
    assert "NESTED FULL: Could not upload a" in out, out
    assert "SMALL 1048576" in out, out
