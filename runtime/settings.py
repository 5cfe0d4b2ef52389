"""Every KASTOR_* environment variable, declared once: its name, type, default and why one sets it.

Settings travel between Kastor processes as environment variables (a pod spec, `kastor start`,
a node agent starting workers), so before this table each module read its own with
`os.environ.get` and a literal default, and the defaults drifted. Here each variable is one
`Setting`; code reads it with `settings.NODE_DEATH_TIMEOUT_S.get()`, which parses the
environment at call time (a test or a runtime_env may set it per process) and fails with an
error naming the variable, its value and what is expected. `all_settings()` feeds the docs'
environment-variable table; a test checks that every KASTOR_ name in the source is declared.

An empty value counts as unset (an assignment with nothing after `=`, in a shell or a pod spec,
means "no value").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingError(ValueError):
    """An environment variable holds a value its setting cannot parse."""


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(raw)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": lambda raw: int(raw.strip()),
    "float": lambda raw: float(raw.strip()),
    "bool": _parse_bool,
    "str": str,
    "path": str,
}
_EXPECTED = {
    "int": "a whole number, e.g. 5",
    "float": "a number, e.g. 10 or 0.5",
    "bool": "one of 1/0, true/false, yes/no, on/off",
}


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable. `internal`: Kastor sets it for its own child processes (a node
    agent for its workers, the operator in its pods); users do not."""

    name: str
    type_name: str
    default: object
    description: str
    internal: bool = False
    # A default computed from other settings when read (shown as `default` in the docs).
    default_factory: Callable[[], T] | None = field(default=None, compare=False, repr=False)

    def raw(self) -> str | None:
        """The variable's text, or None when unset or empty."""
        value = os.environ.get(self.name)
        return value if value else None

    def is_set(self) -> bool:
        return self.raw() is not None

    def get(self) -> T:
        """The parsed value, or the default when unset; raises SettingError on a bad value."""
        raw = self.raw()
        if raw is None:
            return self.default_factory() if self.default_factory is not None else self.default  # type: ignore[return-value]
        return self.parse(raw)

    def get_if_set(self) -> T | None:
        """The parsed value, or None when unset: for flags whose absence means "not asked for"."""
        raw = self.raw()
        return None if raw is None else self.parse(raw)

    def require(self) -> T:
        """The parsed value of a variable that must be set (one Kastor sets for its children)."""
        raw = self.raw()
        if raw is None:
            who = ("Kastor sets it for the processes it starts; start this one through a node agent "
                   "(`kastor start`)") if self.internal else f"set {self.name}"
            raise SettingError(f"{self.name} is not set ({self.description.rstrip('.')}): {who}.")
        return self.parse(raw)

    def parse(self, raw: str) -> T:
        try:
            return _PARSERS[self.type_name](raw)
        except ValueError:
            raise SettingError(f"{self.name}={raw!r} is not valid: expected {_EXPECTED[self.type_name]}. Fix or "
                               f"unset it ({self.name}: {self.description.rstrip('.')}).") from None


_REGISTRY: dict[str, Setting[Any]] = {}


def _declare(name: str, type_name: str, default: object, description: str, *, internal: bool = False,
             default_factory: Callable[[], Any] | None = None) -> Setting[Any]:
    if name in _REGISTRY:
        raise RuntimeError(f"setting {name} declared twice")
    if type_name not in _PARSERS:
        raise RuntimeError(f"setting {name}: unknown type {type_name!r}")
    setting = Setting(name, type_name, default, description, internal, default_factory)
    _REGISTRY[name] = setting
    return setting


def all_settings() -> list[Setting[Any]]:
    """Every declared setting, sorted by name (the docs' environment-variable table)."""
    return sorted(_REGISTRY.values(), key=lambda s: s.name)


def get(name: str) -> Any:
    """The value of the setting called `name` (e.g. "KASTOR_NODE_DEATH_TIMEOUT_S")."""
    try:
        return _REGISTRY[name].get()
    except KeyError:
        raise KeyError(f"{name} is not a declared Kastor setting (see kastor.runtime.settings)") from None


# ---- joining a cluster ----
ADDRESS = _declare("KASTOR_ADDRESS", "str", None,
                   "The head address (host:port) a driver, node agent or `kastor` command joins; unset: "
                   "`kastor.init()` starts a local cluster.")
TOKEN = _declare("KASTOR_TOKEN", "str", None,
                 "The cluster token, when it is not in a file (prefer KASTOR_TOKEN_FILE: the environment "
                 "leaks into child processes and crash reports).")
TOKEN_FILE = _declare("KASTOR_TOKEN_FILE", "path", None,
                      "A file holding the cluster token (a mounted Secret, or the file `kastor start` printed).")
NODE_IP = _declare("KASTOR_NODE_IP", "str", "127.0.0.1",
                   "The address other processes reach this host on (a pod IP in Kubernetes).")
CONNECT_TIMEOUT_S = _declare("KASTOR_CONNECT_TIMEOUT_S", "float", 20.0,
                             "How long a new connection to a Kastor process may take to open (its peer sends "
                             "its first HTTP/2 frame) before calls on it fail with UNAVAILABLE. A loaded or "
                             "briefly paused peer answers late; a refused connection fails at once.")

# ---- the head ----
HEAD_PORT = _declare("KASTOR_HEAD_PORT", "int", 6380, "The port the head serves on.")
CLIENT_PORT = _declare("KASTOR_CLIENT_PORT", "int", 10001,
                       "The port `kastor start --head` serves kastor:// clients on (0: any free port, -1: none); "
                       "a bare `python -m kastor.runtime.head` serves it only when this is set.")
DASHBOARD_PORT = _declare("KASTOR_DASHBOARD_PORT", "int", -1,
                          "The head's HTTP port for Prometheus /metrics and the live tables (0: any free port, "
                          "-1: none).")
CLUSTER_ID = _declare("KASTOR_CLUSTER_ID", "str", None,
                      "Names this cluster's state in Redis; a restarted head finds its state by it.")
REDIS_ADDRESS = _declare("KASTOR_REDIS_ADDRESS", "str", None,
                         "Keep the head's state in this Redis (host:port, redis:// or rediss://) so a head "
                         "restart loses nothing.")
REDIS_PASSWORD = _declare("KASTOR_REDIS_PASSWORD", "str", None,
                          "The Redis password, when not given in a file.")
REDIS_PASSWORD_FILE = _declare("KASTOR_REDIS_PASSWORD_FILE", "path", None,
                               "A file holding the Redis password (a mounted Secret).")
REDIS_RETRY_DEADLINE_S = _declare("KASTOR_REDIS_RETRY_DEADLINE_S", "float", 60.0,
                                  "How long the head retries while Redis is unreachable before failing a write.")
CHECKPOINT_RETRY_S = _declare("KASTOR_CHECKPOINT_RETRY_S", "float", 30.0,
                              "How long a durable actor (kastor.state) retries an unreachable checkpoint store "
                              "before its worker exits (so it restarts from its last durable checkpoint).")
RECONCILE_GRACE_S = _declare("KASTOR_RECONCILE_GRACE_S", "float", 3.0,
                             "How long a restarted head waits for nodes to report their actors before "
                             "re-placing actors that were mid-placement when it died.")
NODE_DEATH_TIMEOUT_S = _declare("KASTOR_NODE_DEATH_TIMEOUT_S", "float", 10.0,
                                "How long a node may miss heartbeats before the head declares it dead and "
                                "restarts its actors elsewhere. Counted on the head, only while the head runs: "
                                "time a starved head did not run is not held against its nodes.")
NODE_RECONNECT_GRACE_S = _declare("KASTOR_NODE_RECONNECT_GRACE_S", "float", 30.0,
                                  "How long a restarted head waits for the nodes it recovered from the store to "
                                  "heartbeat before it declares them dead (at least KASTOR_NODE_DEATH_TIMEOUT_S). "
                                  "A new head pod is reachable only once its Service routes to it, which takes "
                                  "its readiness probe and the endpoints' propagation.")
GCS_REQUEST_TIMEOUT_S = _declare("KASTOR_GCS_REQUEST_TIMEOUT_S", "float", 60.0,
                                 "How long a query of the head's tables (list_named_actors) waits for an answer "
                                 "(Ray's gcs_server_request_timeout_seconds).")

# ---- node agents ----
NUM_CPUS = _declare("KASTOR_NUM_CPUS", "float", None, "CPUs a node agent offers (unset: the host's count).")
NUM_GPUS = _declare("KASTOR_NUM_GPUS", "float", 0.0, "GPUs a node agent offers.")
MEMORY = _declare("KASTOR_MEMORY", "float", 0.0, "Memory (bytes) a node agent offers for `memory=` requests.")
RESOURCES = _declare("KASTOR_RESOURCES", "str", None,
                     'Custom resources a node agent offers, as JSON, e.g. {"accelerator": 2}.')
NODE_LABELS = _declare("KASTOR_NODE_LABELS", "str", None,
                       "Labels a node agent carries for label_selector= scheduling, as key=value pairs separated "
                       "by commas, e.g. region=us-west,cpu-family=amd (kastor.io/node-id is always set).")
HEARTBEAT_INTERVAL_S = _declare("KASTOR_HEARTBEAT_INTERVAL_S", "float", 0.5,
                                "How often a node agent reports to the head.")
NODE_HEAD_LOSS_TIMEOUT_S = _declare("KASTOR_NODE_HEAD_LOSS_TIMEOUT_S", "float", 600.0,
                                    "A node agent that cannot reach the head this long exits (its pod is then "
                                    "replaced).")
LEASE_CHECK_INTERVAL_S = _declare("KASTOR_LEASE_CHECK_INTERVAL_S", "float", 1.0,
                                  "How often a node agent looks for task leases nobody uses.")
LEASE_LINGER_S = _declare("KASTOR_LEASE_LINGER_S", "float", 0.05,
                          "How long a task's owner keeps a leased worker after its last task of that shape "
                          "finished, so the next one skips the lease round trip.")
LEASE_RECLAIM_GRACE_S = _declare("KASTOR_LEASE_RECLAIM_GRACE_S", "float", 5.0,
                                 "A leased worker with no stream and no call for this long is taken back.")
PRESTART_WORKERS = _declare("KASTOR_PRESTART_WORKERS", "int", 2,
                            "Idle workers a node agent keeps started ahead, so actor creation skips process "
                            "start-up.")
GC_FREEZE = _declare("KASTOR_GC_FREEZE", "bool", True,
                     "A driver freezes the objects alive once it connected (gc.freeze), so the cyclic "
                     "collector stops walking them during pipelined calls; 0 turns it off "
                     "(runtime/startup_gc.py).")
FORK_SERVER = _declare("KASTOR_FORK_SERVER", "bool", True,
                       "Node agents fork workers from a pre-imported fork server (an actor start costs a "
                       "fork, and workers share the runtime's pages); 0: every worker is a fresh interpreter.")
IDLE_WORKERS_KEPT = _declare("KASTOR_IDLE_WORKERS_KEPT", "int", None,
                             "Idle workers a node keeps (Ray's num_workers_soft_limit; unset: its CPU count, "
                             "at least KASTOR_PRESTART_WORKERS).")
IDLE_WORKER_KILL_S = _declare("KASTOR_IDLE_WORKER_KILL_S", "float", 1.0,
                              "Idle workers beyond those kept are asked to exit after this long (Ray's "
                              "idle_worker_killing_time_threshold_ms).")
FUNCTION_SIZE_ERROR_BYTES = _declare("KASTOR_FUNCTION_SIZE_ERROR_BYTES", "int", 100_000_000,
                                     "A remote function or actor class larger than this, pickled, is refused at "
                                     "`.remote()` with a ValueError (Ray's FUNCTION_SIZE_ERROR_THRESHOLD).")
FUNCTION_SIZE_WARN_BYTES = _declare("KASTOR_FUNCTION_SIZE_WARN_BYTES", "int", 10_000_000,
                                    "A remote function or actor class larger than this, pickled, is warned about "
                                    "(Ray's FUNCTION_SIZE_WARN_THRESHOLD).")
OWNER_UNREACHABLE_S = _declare("KASTOR_OWNER_UNREACHABLE_S", "float", 30.0,
                               "How long a borrower keeps asking a ref's owner that does not answer (slow: a "
                               "loaded machine, a connection still starting) before the ref fails with "
                               "OwnerDiedError; an owner that refuses the connection is gone at once.")
DEAD_OWNER_SWEEP_S = _declare("KASTOR_DEAD_OWNER_SWEEP_S", "float", 30.0,
                              "How often a node agent checks that the owners of the objects in its store still "
                              "answer; an owner refused twice in a row (it died without freeing them) has its "
                              "objects deleted.")
MAX_STARTING_WORKERS = _declare("KASTOR_MAX_STARTING_WORKERS", "int", 0,
                                "Workers a node starts at once (Ray's maximum_startup_concurrency; 0: its CPU "
                                "count).")
STARTUP_TIMEOUT_S = _declare("KASTOR_STARTUP_TIMEOUT_S", "float", 30.0,
                             "A worker (or a head or node agent started by `kastor start`) that is not ready "
                             "this long after starting is killed; raise it on an overloaded host.")
OBJECT_SPILLING = _declare("KASTOR_OBJECT_SPILLING", "bool", True,
                          "A node agent writes objects that do not fit in its shared-memory store to its spill "
                          "directory on local disk (as Ray spills them); 0: such an object fails with "
                          "ObjectStoreFullError.")
STORE_RECYCLE = _declare("KASTOR_STORE_RECYCLE", "bool", True,
                        "A process reuses the files of its freed large objects for its next large puts "
                        "(pages already allocated: a 100 MiB put about 3x faster), never while any process "
                        "still maps them (runtime/store_recycle.py); 0: every freed file is deleted.")
STORE_MAPPED_WRITES = _declare("KASTOR_STORE_MAPPED_WRITES", "bool", True,
                        "A reused store file (KASTOR_STORE_RECYCLE) is written through a writable mapping the "
                        "process keeps while the file lives, by memcpy (about half the CPU of pwritev); 0: "
                        "pwritev (runtime/store_recycle.py).")
UPLOAD_SPLICE = _declare("KASTOR_UPLOAD_SPLICE", "bool", True,
                        "A node agent and the client port's frame relay move a large upload's bytes with "
                        "splice(2), inside the kernel, on connections without TLS (runtime/splice_copy.py); "
                        "0: they copy them through Python, as with TLS.")
OBJECT_SPILLING_DIR = _declare("KASTOR_OBJECT_SPILLING_DIR", "path", None,
                               "Where a node agent spills objects that do not fit in its store (each node uses "
                               "a kastor-<node id> folder in it; unset: the session folder's spill/). Put it on "
                               "a local disk with room (`kastor start --object-spilling-directory`).")
SESSION_ROOT = _declare("KASTOR_SESSION_ROOT", "path", "/tmp/kastor_sessions",
                        "Where session folders (logs, token files) are made.")
SESSIONS_KEPT = _declare("KASTOR_SESSIONS_KEPT", "int", 5,
                         "How many stopped sessions' folders are kept for their logs.")

# ---- drivers and workers ----
HEAD_RECONNECT_TIMEOUT_S = _declare("KASTOR_HEAD_RECONNECT_TIMEOUT_S", "float", 60.0,
                                    "How long drivers, workers and node agents' reports wait for an unreachable "
                                    "head (e.g. through a restart) before failing with an error.")
JOB_RECONNECT_GRACE_S = _declare(
    "KASTOR_JOB_RECONNECT_GRACE_S", "float", 70.0,
    "How long a restarted head gives drivers to reopen their job sessions before it ends their jobs "
    "(default: KASTOR_HEAD_RECONNECT_TIMEOUT_S + 10).",
    default_factory=lambda: HEAD_RECONNECT_TIMEOUT_S.get() + 10)
JOB_SESSION_OPEN_TIMEOUT_S = _declare(
    "KASTOR_JOB_SESSION_OPEN_TIMEOUT_S", "float", 60.0,
    "How long a new job's driver has to open its job session. A job whose session never opens (its "
    "driver died first, or the registration's reply reached nobody) is finished after it.")
CLIENT_RECONNECT_GRACE_S = _declare("KASTOR_CLIENT_RECONNECT_GRACE_S", "float", 120.0,
                                    "How long a kastor:// client's job, refs and actors are kept while it "
                                    "reconnects (laptop sleep, a port-forward restarting).")
CLIENT_LAZY_PUT = _declare("KASTOR_CLIENT_LAZY_PUT", "bool", True,
                            "A kastor:// client's large put() writes only its local copy; the value is uploaded "
                            "to a node the first time the cluster needs it (a ref passed to a task, an actor or "
                            "another value: runtime/lazy_puts.py). 0: uploaded at put(), as Ray Client does.")
CLIENT_COPIES_DIR = _declare("KASTOR_CLIENT_COPIES_DIR", "str", None,
                              "Where a kastor:// client keeps the local copies of its large puts; unset: "
                              "/dev/shm when it is at least 1 GiB (copies in memory, kept to half of it), else "
                              "the temp directory (runtime/client_copies.py).")
ACTOR_GRACEFUL_SHUTDOWN_TIMEOUT_S = _declare(
    "KASTOR_ACTOR_GRACEFUL_SHUTDOWN_TIMEOUT_S", "float", 30.0,
    "How long an actor ended gracefully may run __ray_shutdown__ and atexit handlers before its process "
    "exits anyway (Ray's actor_graceful_shutdown_timeout_ms).")
RECEIVE_TIMEOUT_S = _declare("KASTOR_RECEIVE_TIMEOUT_S", "float", 60.0,
                             "A request whose message stops arriving part-way is dropped after this long.")
FRAMED_CALLS = _declare("KASTOR_FRAMED_CALLS", "bool", True,
                        "Send actor calls to a worker's data port as length-prefixed frames (runtime/frames.py); "
                        "0 keeps them on gRPC's Execute stream.")
FRAME_RELAY_PORT = _declare("KASTOR_FRAME_RELAY_PORT", "int", 0,
                            "The port of the client port's frame relay (runtime/frame_relay.py), which carries "
                            "kastor:// clients' actor calls: 0 any free port, -1 none (their calls then take the "
                            "client port's gRPC relay). Fix it to expose it beside the client port (a Service, a "
                            "port-forward); clients that cannot reach it fall back to the gRPC relay.")
FAST_ACTOR_CALLS = _declare("KASTOR_FAST_ACTOR_CALLS", "bool", True,
                            "A sync get of a single actor call, made while nothing else of this process is in flight "
                            "to that actor, is sent and read by the calling thread on its own connection "
                            "(runtime/fast_lane.py); 0 sends every call through the core loop.")
LANE_EXECUTION = _declare("KASTOR_LANE_EXECUTION", "bool", True,
                          "A serial actor's worker reads the calls of a caller's lane (KASTOR_FAST_ACTOR_CALLS) on "
                          "the actor's main thread, runs them there and writes the results on the same socket "
                          "(runtime/lane_host.py); 0 serves lanes on the core loop like any other connection.")
SPIN_US = _declare("KASTOR_SPIN_US", "int", 200,
                   "Microseconds a lane's caller and a serial actor's main thread poll their socket before they "
                   "sleep (runtime/spin_wait.py): a sync call's wake-ups cost more than its work. Spinning stops "
                   "by itself while waits last longer; 0 turns it off.")
LAZY_GRPC_SERVER = _declare("KASTOR_LAZY_GRPC_SERVER", "bool", True,
                            "A worker starts its gRPC server when the first connection reaches its port, not at "
                            "start (runtime/lazy_grpc_server.py): most workers never need it. 0 starts it at once.")
UVLOOP = _declare("KASTOR_UVLOOP", "bool", True,
                  "Run Kastor's own event loops on uvloop when installed; 0 falls back to asyncio's loop.")

# ---- TLS ----
TLS_CERT = _declare("KASTOR_TLS_CERT", "path", None, "This process serves TLS with this certificate file.")
TLS_KEY = _declare("KASTOR_TLS_KEY", "path", None, "The private key file of KASTOR_TLS_CERT.")
TLS_CA = _declare("KASTOR_TLS_CA", "path", None,
                  "Connect with TLS, trusting this CA certificate file (a notebook needs only this).")
TLS_SERVER_NAME = _declare("KASTOR_TLS_SERVER_NAME", "str", "kastor",
                           "The name checked in the server's certificate.")

# ---- the operator ----
OPERATOR_RESYNC_S = _declare("KASTOR_OPERATOR_RESYNC_S", "float", 300.0,
                             "How often the operator re-reconciles a settled resource (a Ready cluster whose head "
                             "it watches, a live actor) without any event: pod events, spec changes and the "
                             "head's watch act at once; see docs/kubernetes/operator.md.")
OPERATOR_POLL_S = _declare("KASTOR_OPERATOR_POLL_S", "float", 5.0,
                           "How often the operator re-reconciles a resource that is still settling (pods "
                           "starting, a head not answering or not watched yet, a back-off, a node going "
                           "NotReady); a Ready cluster whose head it watches is not polled.")
OPERATOR_WATCH_TIMEOUT_S = _declare("KASTOR_OPERATOR_WATCH_TIMEOUT_S", "int", 300,
                                    "How long one Kubernetes watch request of the operator lasts before it is "
                                    "reopened.")
OPERATOR_LOST_NODE_GRACE_S = _declare(
    "KASTOR_OPERATOR_LOST_NODE_GRACE_S", "float", 60.0,
    "How long a node must be NotReady/Unknown before the operator replaces its not-Ready pods (and, past "
    "their grace period, force-deletes them once Terminating); see docs/kubernetes/operator.md.")
OPERATOR_WORKERS = _declare("KASTOR_OPERATOR_WORKERS", "int", 8,
                            "Threads the operator runs its (blocking) reconcilers on; kopf's event loop and the "
                            "liveness probe do not share them.")

# ---- set by Kastor for its own processes ----
HEAD_ADDRESS = _declare("KASTOR_HEAD_ADDRESS", "str", None, "The head a worker reports to", internal=True)
NODE_ADDRESS = _declare("KASTOR_NODE_ADDRESS", "str", None, "The node agent that started a worker",
                        internal=True)
NODE_ID = _declare("KASTOR_NODE_ID", "str", None, "The id of the node agent that started a worker", internal=True)
WORKER_ID = _declare("KASTOR_WORKER_ID", "str", None, "A worker's id (hex), also how `kastor logs` finds it",
                     internal=True)
STORE_DIR = _declare("KASTOR_STORE_DIR", "path", None, "The node's shared-memory object store folder",
                     internal=True)
SESSION_DIR = _declare("KASTOR_SESSION_DIR", "path", None, "The node's session folder (its workers' logs)",
                       internal=True)
NODE_LEASE_FILE = _declare("KASTOR_NODE_LEASE_FILE", "path", None,
                           "The file in which a worker's node agent publishes the node's lease (fencing)",
                           internal=True)
REGISTER_FD = _declare("KASTOR_REGISTER_FD", "int", None,
                       "The socket pair a new worker registers with its node agent on, and is started "
                       "as an actor on (runtime/worker_registration.py)", internal=True)
POD_IP = _declare("KASTOR_POD_IP", "str", None,
                  "A pod's IP, from the Kubernetes downward API, that the operator passes on as KASTOR_NODE_IP",
                  internal=True)

# ---- runtime_env (runtime/runtime_env*.py) ----

RUNTIME_ENV_MAX_PACKAGE_BYTES = _declare(
    "KASTOR_RUNTIME_ENV_MAX_PACKAGE_BYTES", "int", 100 * 1024 * 1024,
    "The largest runtime_env working_dir or py_modules package a driver uploads (Ray's limit: 100 MiB).")
RUNTIME_ENV_IGNORE_GITIGNORE = _declare(
    "KASTOR_RUNTIME_ENV_IGNORE_GITIGNORE", "bool", False,
    "Ship the files .gitignore and .rayignore name in a runtime_env working_dir or py_modules (as Ray's "
    "RAY_RUNTIME_ENV_IGNORE_GITIGNORE).")
RUNTIME_ENV = _declare("KASTOR_RUNTIME_ENV", "str", None,
                       "The resolved runtime_env a worker was started in (JSON), inherited by the work it submits",
                       internal=True)
