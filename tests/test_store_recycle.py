"""A freed object's file is reused for the next large put, and never under a live reader.

runtime/store_recycle.py keeps a process's freed store files and overwrites one in place for
its next put (its pages are already allocated). These tests check the rule that makes it
safe, with real files, real locks and real reader processes: a reader that still maps a freed
object (in this process or another) keeps its bytes, because the file it maps is not reused;
a reader that opened the path just before the free finds the object lost, never the next
object's bytes; a pool in a full store is emptied before the put gives up; and a cluster's
driver and actor keep their numpy views of freed objects intact while the driver keeps putting.
"""

from __future__ import annotations

import os
import subprocess
import sys

import kastor
import numpy as np
import pytest
from kastor.runtime import serialization, spilling, store_owners, store_recycle
from test_store_full import run_with_small_store

MIB = 2**20
OWNER = "127.0.0.1:1"


def _pool(store) -> store_recycle.RecyclePool:
    return store_recycle.RecyclePool(
        str(store), lambda: os.path.join(store_owners.owner_dir(str(store), OWNER), store_recycle.POOL_DIR))


def _put(store, pool, value, name) -> str:
    path, _ = spilling.write(serialization.serialize(value), str(store), OWNER, name, pool)
    return path


def _pooled(store) -> list[str]:
    pool_dir = os.path.join(store_owners.owner_dir(str(store), OWNER), store_recycle.POOL_DIR)
    return sorted(os.listdir(pool_dir)) if os.path.isdir(pool_dir) else []


def test_a_freed_file_nobody_maps_is_reused_for_the_next_put(tmp_path):
    pool = _pool(tmp_path)
    first = _put(tmp_path, pool, np.full(4 * MIB, 1, dtype=np.uint8), "a" * 40)
    inode = os.stat(first).st_ino
    arr = serialization.load_file(first)
    assert arr[0] == 1
    del arr  # its mapping, and the lock it held, are gone
    assert pool.keep(first)
    assert not os.path.exists(first) and len(_pooled(tmp_path)) == 1

    second = _put(tmp_path, pool, np.full(3 * MIB, 2, dtype=np.uint8), "b" * 40)
    assert os.stat(second).st_ino == inode, "the pooled file was not reused"
    assert _pooled(tmp_path) == []
    out = serialization.load_file(second)
    assert out.nbytes == 3 * MIB and out.min() == out.max() == 2
    # the reused file was cut to the new, smaller object: nothing of the old one is left at its end
    assert os.path.getsize(second) == serialization.serialize(np.zeros(3 * MIB, dtype=np.uint8)).size


def test_a_freed_object_mapped_here_keeps_its_bytes(tmp_path):
    pool = _pool(tmp_path)
    first = _put(tmp_path, pool, np.full(4 * MIB, 1, dtype=np.uint8), "a" * 40)
    view = serialization.load_file(first)
    inode = os.stat(first).st_ino
    assert pool.keep(first)
    second = _put(tmp_path, pool, np.full(4 * MIB, 2, dtype=np.uint8), "b" * 40)
    assert os.stat(second).st_ino != inode, "a file still mapped was reused"
    assert view.min() == view.max() == 1
    assert _pooled(tmp_path) == []  # the mapped file was unlinked, not kept: its pages go with the view


READER = '''
import sys
from kastor.runtime import serialization
view = serialization.load_file(sys.argv[1])
print("MAPPED", flush=True)
sys.stdin.readline()
print("SEEN", int(view.min()), int(view.max()), flush=True)
'''


def test_a_freed_object_mapped_by_another_process_keeps_its_bytes(tmp_path):
    pool = _pool(tmp_path)
    first = _put(tmp_path, pool, np.full(4 * MIB, 1, dtype=np.uint8), "a" * 40)
    reader = subprocess.Popen([sys.executable, "-c", READER, first], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "MAPPED"
        assert pool.keep(first)
        for i in range(3):  # the reader's file is never handed out, however many puts follow
            path = _put(tmp_path, pool, np.full(4 * MIB, 2 + i, dtype=np.uint8), f"{i:040d}")
            pool.keep(path)
        out, _ = reader.communicate("go\n", timeout=60)
    finally:
        reader.kill()
    assert "SEEN 1 1" in out, out


def test_a_reader_that_opened_the_path_before_the_free_finds_the_object_lost(tmp_path):
    pool = _pool(tmp_path)
    first = _put(tmp_path, pool, np.full(4 * MIB, 1, dtype=np.uint8), "a" * 40)
    with open(first, "rb") as early:  # opened, not yet locked, when the owner frees it
        assert pool.keep(first)
        second = _put(tmp_path, pool, np.full(4 * MIB, 2, dtype=np.uint8), "b" * 40)
        assert os.fstat(early.fileno()).st_ino == os.stat(second).st_ino  # it was reused
        with pytest.raises(FileNotFoundError, match="freed while it was being opened"):
            store_owners.lock_for_reading(early.fileno(), first)
    with pytest.raises(FileNotFoundError):
        serialization.load_file(first)
    with pytest.raises(FileNotFoundError):
        list(store_owners.read_chunks(first, MIB))


def test_small_files_other_stores_and_a_full_pool_are_not_kept(tmp_path):
    store, other = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    other.mkdir()
    pool = _pool(store)
    small = _put(store, pool, np.ones(MIB // 2, dtype=np.uint8), "s" * 40)
    assert not pool.keep(small) and os.path.exists(small)
    outside = _put(other, None, np.ones(2 * MIB, dtype=np.uint8), "o" * 40)
    assert not pool.keep(outside) and os.path.exists(outside)
    kept = [_put(store, pool, np.ones(2 * MIB, dtype=np.uint8), f"{i:040d}")
            for i in range(store_recycle.MAX_FILES + 1)]
    assert [pool.keep(p) for p in kept] == [True] * store_recycle.MAX_FILES + [False]
    assert pool.drain() and _pooled(store) == []


FULL_STORE = '''
import os, sys
import numpy as np
from kastor.runtime import serialization, spilling, store_owners, store_recycle
MIB = 2**20
store = "/dev/shm/store"
os.makedirs(store)
owner = "127.0.0.1:1"
pool = store_recycle.RecyclePool(store, lambda: os.path.join(store_owners.owner_dir(store, owner), ".recycle"))
path, _ = spilling.write(serialization.serialize(np.ones(3 * MIB, dtype=np.uint8)), store, owner, "a" * 40, pool)
print("KEPT", pool.keep(path))
path, _ = spilling.write(serialization.serialize(np.ones(29 * MIB, dtype=np.uint8)), store, owner, "b" * 40, pool)
print("STORED", path.startswith(store + "/"), os.path.getsize(path) > 29 * MIB)
print("POOL", os.listdir(os.path.join(store_owners.owner_dir(store, owner), ".recycle")))
'''


def test_a_full_store_empties_the_pool_before_the_put_fails(tmp_path):
    script = tmp_path / "full.py"
    script.write_text(FULL_STORE)
    result = run_with_small_store(script, 32, 120)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    # 3 MiB pooled + 29 MiB do not fit in 32 MiB: the pool went, and the object is in the store
    assert "KEPT True" in result.stdout and "STORED True True" in result.stdout, result.stdout
    assert "POOL []" in result.stdout, result.stdout


@kastor.remote
class Holder:
    def hold(self, arr):
        self.arr = arr  # a zero-copy view of the driver's object, kept after the call
        return int(arr[0])

    def seen(self):
        return int(self.arr.min()), int(self.arr.max())


def test_views_of_freed_objects_stay_intact_while_the_driver_keeps_putting(embedded_cluster):
    holder = Holder.remote()
    mine = kastor.get(kastor.put(np.full(8 * MIB, 7, dtype=np.uint8)))
    theirs = kastor.put(np.full(8 * MIB, 9, dtype=np.uint8))
    assert kastor.get(holder.hold.remote(theirs)) == 9
    del theirs  # freed once the actor lets go of its ref; its view still maps the file
    for i in range(20):
        out = kastor.get(kastor.put(np.full(8 * MIB, i, dtype=np.uint8)))
        assert out.min() == out.max() == i
    assert mine.min() == mine.max() == 7
    assert kastor.get(holder.seen.remote()) == (9, 9)



def _mapped_paths() -> set[str]:
    """Files this process maps, as /proc/self/maps names them (" (deleted)" once unlinked)."""
    with open("/proc/self/maps") as f:
        return {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}


def _reuse(store, pool, value, name) -> str:
    """A put that must go into the one pooled file."""
    assert pool.stats()["files"] == 1
    path = _put(store, pool, value, name)
    assert pool.stats()["files"] == 0
    return path


def test_a_file_reused_again_is_written_through_its_kept_mapping(tmp_path):
    pool = _pool(tmp_path)
    path = _put(tmp_path, pool, np.full(4 * MIB, 1, dtype=np.uint8), "a" * 40)
    sizes = [4 * MIB, 4 * MIB, 2 * MIB, 6 * MIB, 3 * MIB]  # the same, smaller, larger than the mapping
    for i, size in enumerate(sizes):
        assert pool.keep(path)
        path = _reuse(tmp_path, pool, np.full(size, 10 + i, dtype=np.uint8), f"{i:040d}")
        out = serialization.load_file(path)
        assert out.nbytes == size and out.min() == out.max() == 10 + i
        assert os.path.getsize(path) == serialization.serialize(np.zeros(size, dtype=np.uint8)).size
        del out
    assert pool.stats()["mapped_writes"] == len(sizes)
    assert pool.stats()["mappings"] == 1  # one file, mapped again only when it outgrew its mapping


def test_a_reused_file_written_without_mappings_has_the_same_bytes(tmp_path):
    values = [np.arange(5 * MIB, dtype=np.uint8), {"x": np.ones(3 * MIB), "y": "tail"}]
    frames = []
    for mapped in (True, False):
        pool = store_recycle.RecyclePool(
            str(tmp_path), lambda: os.path.join(store_owners.owner_dir(str(tmp_path), OWNER), store_recycle.POOL_DIR),
            mapped_writes=mapped)
        path = _put(tmp_path, pool, np.zeros(6 * MIB, dtype=np.uint8), "z" * 40)
        for i, value in enumerate(values):
            assert pool.keep(path)
            path = _reuse(tmp_path, pool, value, f"{i:040d}")
            with open(path, "rb") as f:
                frames.append(f.read())
        assert pool.stats()["mapped_writes"] == (len(values) if mapped else 0)
        pool.keep(path)
        pool.drain()
    assert frames[:2] == frames[2:]
    assert frames[0] == serialization.serialize(values[0]).to_bytes()


def test_a_kept_mapping_goes_with_its_file(tmp_path):
    pool = _pool(tmp_path)
    path = _put(tmp_path, pool, np.ones(4 * MIB, dtype=np.uint8), "a" * 40)
    assert pool.keep(path)
    path = _reuse(tmp_path, pool, np.ones(4 * MIB, dtype=np.uint8), "b" * 40)
    assert path in _mapped_paths()  # kept for the file's next reuse, as an object in the meantime
    # its free is not kept (the pool is full): the caller deletes it, and the mapping must go first,
    # or its pages would stay allocated in the store after the delete
    others = [_put(tmp_path, None, np.ones(2 * MIB, dtype=np.uint8), f"{i:040d}")
              for i in range(store_recycle.MAX_FILES)]
    assert all(pool.keep(p) for p in others)
    assert not pool.keep(path)
    os.unlink(path)
    assert not [p for p in _mapped_paths() if str(tmp_path) in p]
    assert pool.stats()["mappings"] == 0

    # a mapped file in the pool: drained (a full store, or the process stops) with its mapping
    pool.drain()
    path = _put(tmp_path, pool, np.ones(4 * MIB, dtype=np.uint8), "c" * 40)
    assert pool.keep(path)
    path = _reuse(tmp_path, pool, np.ones(4 * MIB, dtype=np.uint8), "d" * 40)
    assert pool.keep(path) and pool.stats()["mappings"] == 1
    assert pool.drain()
    assert not [p for p in _mapped_paths() if str(tmp_path) in p]


def test_a_kept_mapping_holds_no_lock_against_readers(tmp_path):
    pool = _pool(tmp_path)
    path = _put(tmp_path, pool, np.ones(4 * MIB, dtype=np.uint8), "a" * 40)
    assert pool.keep(path)
    path = _reuse(tmp_path, pool, np.full(4 * MIB, 5, dtype=np.uint8), "b" * 40)
    reader = subprocess.Popen([sys.executable, "-c", READER, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "MAPPED"  # it took its shared lock
        assert pool.keep(path)
        # the reader maps it: not reused, though this process has it mapped for writing
        other = _put(tmp_path, pool, np.full(4 * MIB, 6, dtype=np.uint8), "c" * 40)
        assert serialization.load_file(other).min() == 6
        out, _ = reader.communicate("go\n", timeout=60)
    finally:
        reader.kill()
    assert "SEEN 5 5" in out, out
    assert pool.stats()["mappings"] == 0  # the file the reader kept was deleted, and unmapped
