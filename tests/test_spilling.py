"""Objects that do not fit in the node's shared-memory store are spilled to local disk, as in Ray.

Each driver runs in a user and mount namespace of its own with a 16 MiB tmpfs over /dev/shm
(see test_store_full), so the store really fills up. Everything it then stores (puts, task
results) must come back intact: from the driver, and from tasks on another node, which fetch
the spilled file from the node agent. Freeing an object deletes its spill file, and a node agent
that stops deletes its spill directory. A spill directory on a disk that is full too still
fails with ObjectStoreFullError, and its message names the setting to change.
"""

from __future__ import annotations

import json
import os

import kastor
import pytest
from kastor.runtime import session_dirs
from test_store_full import STORE_MIB, run_with_small_store

COMMON = '''
import os, sys, time
import numpy as np
import kastor
from kastor import exceptions


def object_files(root):
    """The object files under a spill root (an owner folder's .owner file is not one)."""
    out = []
    for dirpath, _, files in os.walk(root):
        out += [os.path.join(dirpath, f) for f in files if f != ".owner"]
    return sorted(out)


def wait_until(predicate, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting until {what}")
        time.sleep(0.05)


@kastor.remote
def check(*values):
    """Where it ran, and a fingerprint of each value it was given."""
    node = kastor.get_runtime_context().get_node_id()
    return node, [v[:1] + v[-1:] if isinstance(v, bytes) else (float(v.min()), float(v.max())) for v in values]


@kastor.remote
def make(nbytes, fill):
    return np.full(nbytes // 8, float(fill))
'''

TWO_NODES = COMMON + '''
from kastor.runtime import launcher

work = sys.argv[1]
token = "spill-" + os.urandom(6).hex()
env = dict(os.environ, KASTOR_TOKEN=token)
env.pop("KASTOR_ADDRESS", None)
port = launcher.free_port()
address = f"127.0.0.1:{port}"
head = launcher.Child("kastor.runtime.head", ["--port", str(port)], env, f"{work}/head.log")
head.wait_ready()
spill_a, spill_b = f"{work}/spill-a", f"{work}/spill-b"
nodes = {
    # one node is told its spill directory by the flag, the other by the environment
    "a": launcher.Child("kastor.runtime.node_agent",
                        ["--address", address, "--node-id", "nodea", "--num-cpus", "1", "--resources", '{"a": 1}',
                         "--session-dir", f"{work}/session-a", "--object-spilling-directory", spill_a],
                        env, f"{work}/node-a.log"),
    "b": launcher.Child("kastor.runtime.node_agent",
                        ["--address", address, "--node-id", "nodeb", "--num-cpus", "1", "--resources", '{"b": 1}',
                         "--session-dir", f"{work}/session-b"],
                        dict(env, KASTOR_OBJECT_SPILLING_DIR=spill_b), f"{work}/node-b.log"),
}
for child in nodes.values():
    child.wait_ready()
kastor.init(address=address, token=token)

MiB = 2**20
arrays = [kastor.put(np.full(MiB, float(i))) for i in range(5)]   # 8 MiB each: 40 MiB into a 16 MiB store
blobs = [kastor.put(bytes([i]) * (3 * MiB)) for i in range(4)]
print("SPILLED PUTS", len(object_files(spill_a) + object_files(spill_b)) >= 4)
print("DRIVER ARRAYS", all(np.array_equal(kastor.get(r, timeout=60), np.full(MiB, float(i)))
                           for i, r in enumerate(arrays)))
print("DRIVER BLOBS", all(kastor.get(r, timeout=60) == bytes([i]) * (3 * MiB) for i, r in enumerate(blobs)))

expected = [(float(i), float(i)) for i in range(5)] + [bytes([i, i]) for i in range(4)]
seen = {}
for name in ("a", "b"):
    node, got = kastor.get(check.options(resources={name: 1}).remote(*arrays, *blobs), timeout=120)
    seen[name] = node
    print("TASK ON", name, got == expected)
print("TWO NODES", len(set(seen.values())) == 2)

before = len(object_files(spill_a) + object_files(spill_b))
results = [make.options(resources={"b": 1}).remote(6 * MiB, 10 + i) for i in range(3)]
print("RESULTS", all(np.array_equal(kastor.get(r, timeout=120), np.full(6 * MiB // 8, float(10 + i)))
                     for i, r in enumerate(results)))
print("SPILLED RESULTS", len(object_files(spill_b)) > 0 and len(object_files(spill_a) + object_files(spill_b)) > before)
_, got = kastor.get(check.options(resources={"a": 1}).remote(*results), timeout=120)
print("RESULTS ON A", got == [(float(10 + i), float(10 + i)) for i in range(3)])

del arrays, blobs, results
wait_until(lambda: not object_files(spill_a) and not object_files(spill_b), "freed objects' spill files are gone")
print("FREED OK")
kastor.shutdown()
for child in nodes.values():
    child.stop(grace=120)
head.stop()
print("DIRS LEFT", [d for d in (f"{spill_a}/kastor-nodea", f"{spill_b}/kastor-nodeb") if os.path.exists(d)])
'''

EMBEDDED = COMMON + '''
import glob

kastor.init(num_cpus=1)
MiB = 2**20
arrays = [kastor.put(np.arange(MiB, dtype=np.int64) + i) for i in range(4)]  # 32 MiB into a 16 MiB store
spilled = glob.glob(os.path.join(os.environ["KASTOR_SESSION_ROOT"], "session_*", "spill", "kastor-*", "*", "*"))
print("IN SESSION", len([f for f in spilled if not f.endswith(".owner")]) >= 2)
print("VALUES", all(np.array_equal(kastor.get(r, timeout=60), np.arange(MiB, dtype=np.int64) + i)
                    for i, r in enumerate(arrays)))
node, got = kastor.get(check.remote(*arrays), timeout=120)
print("TASK", got == [(float(i), float(MiB - 1 + i)) for i in range(4)])
kastor.shutdown()
'''

DISK_FULL = COMMON + '''
kastor.init(num_cpus=1)
spill = os.environ["KASTOR_OBJECT_SPILLING_DIR"]
MiB = 2**20
first = kastor.put(np.ones(14 * MiB // 8))   # fits in the 16 MiB store, and leaves it about full
try:
    kastor.put(np.ones(10 * MiB // 8))       # fits neither in the store nor in the 4 MiB spill disk
except exceptions.ObjectStoreFullError as e:
    print("PUT FULL:", e)
else:
    print("PUT STORED")
try:
    kastor.get(make.remote(10 * MiB, 1), timeout=120)
except exceptions.ObjectStoreFullError as e:
    print("RESULT FULL:", isinstance(e, exceptions.TaskError), e)
else:
    print("RESULT STORED")
small = kastor.put(np.ones(3 * MiB // 8))    # still spills: the spill disk has room for this one
print("SMALL SPILLED", len(object_files(spill)) == 1, float(kastor.get(small, timeout=60).sum()) == 3 * MiB / 8)
print("PARTIAL FILES", [f for f in object_files(spill) if f.endswith(".tmp")])
kastor.shutdown()
'''


CLIENT = COMMON + '''
from kastor.runtime import launcher

work = sys.argv[1]
token = "spill-" + os.urandom(6).hex()
env = dict(os.environ, KASTOR_TOKEN=token, KASTOR_CLIENT_PORT=str(launcher.free_port()))
env.pop("KASTOR_ADDRESS", None)
port = launcher.free_port()
head = launcher.Child("kastor.runtime.head", ["--port", str(port)], env, f"{work}/head.log")
head.wait_ready()
spill = f"{work}/spill"
node = launcher.Child("kastor.runtime.node_agent",
                      ["--address", f"127.0.0.1:{port}", "--num-cpus", "1", "--session-dir", f"{work}/session",
                       "--object-spilling-directory", spill], env, f"{work}/node.log")
node.wait_ready()
kastor.init(f"kastor://127.0.0.1:{env['KASTOR_CLIENT_PORT']}", token=token)
MiB = 2**20
arrays = [kastor.put(np.full(MiB, float(i))) for i in range(4)]   # 32 MiB, for a 16 MiB store
print("CLIENT VALUES", all(np.array_equal(kastor.get(r, timeout=60), np.full(MiB, float(i)))
                           for i, r in enumerate(arrays)))
_, got = kastor.get(check.remote(*arrays), timeout=120)  # uploaded to the node for it (lazy_puts.py)
print("TASK", got == [(float(i), float(i)) for i in range(4)])
print("UPLOADS SPILLED", len(object_files(spill)) >= 2)
del arrays
wait_until(lambda: not object_files(spill), "the client's freed uploads are gone from the spill directory")
print("FREED OK")
kastor.shutdown()
node.stop(grace=120)
head.stop()
'''


DEAD_OWNER = COMMON + '''
import subprocess
from kastor.runtime import launcher

work = sys.argv[1]
env = dict(os.environ, KASTOR_TOKEN="spill-" + os.urandom(6).hex(), KASTOR_DEAD_OWNER_SWEEP_S="0.5")
env.pop("KASTOR_ADDRESS", None)
port = launcher.free_port()
spill = f"{work}/spill"
head = subprocess.Popen([sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--block", "--port", str(port),
                         "--client-port", "-1", "--num-cpus", "1", "--object-spilling-directory", spill],
                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
line = head.stdout.readline()
assert "started" in line, line + head.stdout.read()
PUTTER = f"""
import sys, kastor, numpy as np
kastor.init(address="127.0.0.1:{port}")
refs = [kastor.put(np.ones(2**20)) for _ in range(4)]  # 32 MiB into a 16 MiB store
print("PUT", flush=True)
sys.stdin.readline()
"""
try:
    driver = subprocess.Popen([sys.executable, "-c", PUTTER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert driver.stdout.readline().strip() == "PUT"
    print("SPILLED", len(object_files(spill)) >= 2)  # under `kastor start --object-spilling-directory`
    driver.kill()
    driver.wait(60)
    wait_until(lambda: not object_files(spill), "the killed driver's spilled objects are swept")
    print("SWEPT OK")
finally:
    head.terminate()
    head.wait(120)
print("DIRS LEFT", os.listdir(spill))  # the stopped node deleted its kastor-<node id> folder
'''


RAY_CONFIG = COMMON + '''
import json

work = sys.argv[1]
spill = f"{work}/ray-spill"
kastor.init(num_cpus=1, _system_config={
    "object_spilling_config": json.dumps({"type": "filesystem", "params": {"directory_path": spill}})})
refs = [kastor.put(np.full(2**20, float(i))) for i in range(3)]  # 24 MiB into a 16 MiB store
print("RAY DIR", len(object_files(spill)) >= 1,
      all(float(kastor.get(r, timeout=60)[0]) == i for i, r in enumerate(refs)))
kastor.shutdown()
kastor.init(num_cpus=1, _system_config={"automatic_object_spilling_enabled": False})
try:
    [kastor.put(np.ones(2**20)) for _ in range(3)]
except exceptions.ObjectStoreFullError as e:
    print("RAY OFF:", e)
kastor.shutdown()
'''


def _run_in_namespace(tmp_path, script: str, mounts: str = "", **env: str) -> str:
    path = tmp_path / "driver.py"
    path.write_text(script)
    full_env = dict(os.environ, KASTOR_SESSION_ROOT=str(tmp_path / "sessions"), **env)
    full_env.pop("KASTOR_ADDRESS", None)
    result = run_with_small_store(path, STORE_MIB, 540, str(tmp_path), mounts=mounts, cwd=tmp_path, env=full_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def test_a_full_store_spills_to_disk_and_every_node_reads_the_values_back(tmp_path):
    out = _run_in_namespace(tmp_path, TWO_NODES)
    for line in ("SPILLED PUTS True", "DRIVER ARRAYS True", "DRIVER BLOBS True", "TASK ON a True", "TASK ON b True",
                 "TWO NODES True", "RESULTS True", "SPILLED RESULTS True", "RESULTS ON A True", "FREED OK",
                 "DIRS LEFT []"):
        assert line in out, out


def test_the_default_spill_directory_is_in_the_session_folder(tmp_path):
    out = _run_in_namespace(tmp_path, EMBEDDED)
    for line in ("IN SESSION True", "VALUES True", "TASK True"):
        assert line in out, out


def test_a_full_spill_disk_still_fails_with_object_store_full(tmp_path):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    out = _run_in_namespace(tmp_path, DISK_FULL, mounts=f"mount -t tmpfs -o size=4m tmpfs {disk} &&",
                            KASTOR_OBJECT_SPILLING_DIR=str(disk))
    assert "PUT FULL: Could not store an object of" in out, out
    assert f"its spill directory at {disk}/kastor-" in out and "set KASTOR_OBJECT_SPILLING_DIR" in out, out
    assert "RESULT FULL: True" in out, out
    assert "SMALL SPILLED True True" in out, out
    assert "PARTIAL FILES []" in out, out


def test_a_dead_sessions_spilled_objects_are_deleted_even_when_its_logs_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(session_dirs.config, "SESSION_ROOT", str(tmp_path))
    dead = tmp_path / f"{session_dirs.PREFIX}20200101-000000_1_local"
    (dead / "logs").mkdir(parents=True)
    (dead / session_dirs.SPILL_FOLDER / "kastor-n1").mkdir(parents=True)
    (dead / session_dirs.SPILL_FOLDER / "kastor-n1" / "object").write_bytes(b"x" * 1000)
    session_dirs.prune(keep=5)
    assert (dead / "logs").is_dir(), "a dead session's logs are kept"
    assert not (dead / session_dirs.SPILL_FOLDER).exists(), "but not what its nodes spilled"


def test_a_clients_uploads_spill_too(tmp_path):
    out = _run_in_namespace(tmp_path, CLIENT)
    for line in ("UPLOADS SPILLED True", "CLIENT VALUES True", "TASK True", "FREED OK"):
        assert line in out, out


def test_a_dead_owners_spilled_objects_are_swept(tmp_path):
    out = _run_in_namespace(tmp_path, DEAD_OWNER)
    for line in ("SPILLED True", "SWEPT OK", "DIRS LEFT []"):
        assert line in out, out


def test_rays_system_config_sets_the_embedded_clusters_spilling(tmp_path):
    out = _run_in_namespace(tmp_path, RAY_CONFIG)
    assert "RAY DIR True True" in out, out
    assert "RAY OFF: Could not store an object of" in out and "KASTOR_OBJECT_SPILLING=1" in out, out


@pytest.mark.parametrize("config, complaint", [
    ({"object_spilling_config": json.dumps({"type": "smart_open", "params": {"uri": "s3://bucket/spill"}})},
     "spills to a local directory only"),
    ({"object_spilling_config": "{not json"}, "is not valid"),
])
def test_a_spilling_config_kastor_cannot_honour_is_refused_at_init(config, complaint):
    with pytest.raises(ValueError, match=complaint):
        kastor.init(num_cpus=1, _system_config=config)
    assert not kastor.is_initialized()
