"""Object spilling: an object that does not fit in the node's shared-memory store goes to disk.

Ray spills objects to local disk when its store is full (`object_spilling_config`, by default a
folder of the session directory) and, when spilling cannot free room soon enough, allocates new
objects on disk instead (its "fallback allocation"). Kastor does the second. Its store is files
in `/dev/shm`. A file's path is the object's location, and that location has already gone to
every borrower, so moving an object that is already stored would break the paths they hold.
So a new object that does not fit in the store is written to the node's spill directory on
local disk. It goes under its owner's directory there, as in the store (store_owners), and its
location names that file. Everything else is unchanged:

- a process on the node maps the file read-only, so numpy arrays are still views with no copy
  (served by the page cache, at disk speed the first time);
- other nodes fetch it from the node agent (FetchObject), which serves its spill directory
  as well as its store;
- freeing deletes the file, the dead-owner sweep covers the spill directory too, and the node
  agent deletes the directory when it stops (session_dirs also empties the `spill` folder of
  sessions that ended without a clean stop).

The node agent records its spill directory as a symlink named `.spill` in its store directory.
Every process that writes to the store (the node's workers, a driver that shares the node)
finds the directory through that link and needs no setting of its own. No link means spilling
is off (KASTOR_OBJECT_SPILLING=0, or a driver that keeps its objects in a temp folder of its
own).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from kastor.runtime import session_dirs, settings, store_owners
from kastor.runtime.exceptions import ObjectStoreFullError

if TYPE_CHECKING:  # the node agent uses this module too, and needs no pickler
    from kastor.runtime.serialization import Serialized
    from kastor.runtime.store_recycle import RecyclePool

LINK = ".spill"          # in a store directory: a symlink to the node's spill directory
SESSION_FOLDER = session_dirs.SPILL_FOLDER  # the default spill root, inside the node's session folder


def node_spill_dir(flag: str | None, session_dir: str, node_id: str) -> str | None:
    """The spill directory of node `node_id`, or None when spilling is off.

    Its root comes from `--object-spilling-directory` (`flag`), else from
    KASTOR_OBJECT_SPILLING_DIR, else it is the session folder's `spill/`. Each node has its own
    directory under the root, so nodes that share a root (or a host) never mix their files."""
    if not settings.OBJECT_SPILLING.get():
        return None
    root = flag or settings.OBJECT_SPILLING_DIR.get() or os.path.join(session_dir, SESSION_FOLDER)
    return os.path.join(os.path.abspath(root), f"kastor-{node_id}")


def from_ray_system_config(system_config: Mapping[str, object] | None) -> tuple[bool | None, str | None]:
    """(spilling on?, its directory) from Ray's `ray.init(_system_config=...)`, each None if not given there.

    Ray's keys: `automatic_object_spilling_enabled`, and `object_spilling_config`, a JSON string
    such as `{"type": "filesystem", "params": {"directory_path": "/mnt/spill"}}`. Kastor spills to
    a local directory only, so another type (Ray's `smart_open`, for S3) is refused rather than
    ignored."""
    system_config = system_config or {}
    enabled = system_config.get("automatic_object_spilling_enabled")
    raw = system_config.get("object_spilling_config")
    if raw is None:
        return (None if enabled is None else bool(enabled)), None
    try:
        spec = json.loads(raw) if isinstance(raw, str) else raw
        kind = spec.get("type", "filesystem")
        path = spec.get("params", {}).get("directory_path")
    except (ValueError, AttributeError):
        raise ValueError(f"_system_config['object_spilling_config'] is not valid: {raw!r}. Expected a JSON object "
                         f'such as {{"type": "filesystem", "params": {{"directory_path": "/mnt/spill"}}}}.') from None
    if kind != "filesystem":
        raise ValueError(f"_system_config['object_spilling_config'] asks for spilling of type {kind!r}: Kastor "
                         f"spills to a local directory only (type 'filesystem', params.directory_path).")
    if isinstance(path, list):  # Ray accepts several directories; Kastor uses the first
        path = path[0] if path else None
    if path is not None and not isinstance(path, str):
        raise ValueError(f"_system_config['object_spilling_config']: directory_path must be a path, got {path!r}.")
    return (None if enabled is None else bool(enabled)), path


def attach(store_dir: str, spill_dir: str) -> None:
    """Makes `spill_dir` and links it from `store_dir` so the node's writers find it (see module doc)."""
    os.makedirs(spill_dir, mode=0o700, exist_ok=True)
    tmp = os.path.join(store_dir, f"{LINK}.{os.getpid()}")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(spill_dir, tmp)
    os.replace(tmp, os.path.join(store_dir, LINK))


def spill_dir_of(store_dir: str) -> str | None:
    """The spill directory linked from `store_dir`, or None if the store has none (spilling is off)."""
    try:
        return os.readlink(os.path.join(store_dir, LINK))
    except OSError:
        return None


def write(ser: Serialized, store_dir: str, owner: str, name: str,
          pool: RecyclePool | None = None) -> tuple[str, int]:
    """Writes a serialized object into the store, or into the spill directory if the store is full.

    `pool`: this process's freed store files, reused when one is free (store_recycle), and
    deleted before the object goes to disk for want of room. Returns (path, size). Raises
    ObjectStoreFullError, with no part of the object left behind, when it fits in neither, or
    when the store is full and has no spill directory."""
    try:
        return _write_in(store_dir, ser, owner, name, pool)
    except ObjectStoreFullError as e:
        full = e
    if pool is not None and pool.drain():
        try:
            return _write_in(store_dir, ser, owner, name)
        except ObjectStoreFullError as e:
            full = e
    spill_dir = spill_dir_of(store_dir)
    if spill_dir is None:
        raise ObjectStoreFullError(
            f"{full} Spilling to disk is off for this store: run its node agent with "
            f"KASTOR_OBJECT_SPILLING=1 (the default) to write objects that do not fit to local disk.") from None
    try:
        return _write_in(spill_dir, ser, owner, name)
    except ObjectStoreFullError:
        raise ObjectStoreFullError(
            f"Could not store an object of {ser.size} bytes: the node's object store at {store_dir} is full "
            f"({_room(store_dir)}), and its spill directory at {spill_dir} has no room for it either "
            f"({_room(spill_dir)}). Drop refs to objects you no longer need so they are freed, store fewer or "
            f"smaller objects at once, or spill to a disk with more room: set KASTOR_OBJECT_SPILLING_DIR (or "
            f"`kastor start --object-spilling-directory`) on the node.") from None


def _write_in(directory: str, ser: Serialized, owner: str, name: str,
              pool: RecyclePool | None = None) -> tuple[str, int]:
    """(path, size) of the object written under its owner's folder of `directory`. A file system too
    full for even the owner's folder is full for the object too."""
    try:
        path = store_owners.object_path(directory, owner, name)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ObjectStoreFullError(f"Could not store an object of {ser.size} bytes in {directory}: it is full "
                                       f"({_room(directory)}).") from None
        raise
    if pool is not None and (size := pool.write(ser, path)) is not None:
        return path, size
    return path, ser.write_file(path)


def pick_dir(store_dir: str, size: int) -> str | None:
    """Where an uploaded object of `size` bytes goes (PutObject): the store if it has room, else the
    spill directory if that has room, else None."""
    spill_dir = spill_dir_of(store_dir)
    for d in (store_dir, spill_dir):
        if d is not None and _free(d) >= size:
            return d
    return None


def _free(directory: str) -> int:
    try:
        st = os.statvfs(directory)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _room(directory: str) -> str:
    try:
        st = os.statvfs(directory)
    except OSError:
        return "its free space is unknown"
    return f"{st.f_bavail * st.f_frsize} of its {st.f_blocks * st.f_frsize} bytes are free"
