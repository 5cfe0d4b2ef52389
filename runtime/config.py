"""Tunables shared by every Kastor process.

The environment variables behind them are declared in `settings` (name, type, default, why);
the values here are read once, when a process imports this module. The ENV_* names are the
variables Kastor passes to the processes it starts.
"""

import os

from kastor.runtime import settings

ENV_ADDRESS = settings.ADDRESS.name
ENV_TOKEN = settings.TOKEN.name
ENV_TOKEN_FILE = settings.TOKEN_FILE.name
ENV_NODE_IP = settings.NODE_IP.name
ENV_HEAD_ADDRESS = settings.HEAD_ADDRESS.name
ENV_NODE_ADDRESS = settings.NODE_ADDRESS.name
ENV_NODE_ID = settings.NODE_ID.name
ENV_WORKER_ID = settings.WORKER_ID.name
ENV_REGISTER_FD = settings.REGISTER_FD.name  # set by a node agent: the pipe its new worker registers on
ENV_STORE_DIR = settings.STORE_DIR.name
ENV_SESSION_DIR = settings.SESSION_DIR.name
ENV_NODE_LEASE_FILE = settings.NODE_LEASE_FILE.name  # set by a node agent for its workers (fencing)

TOKEN_METADATA_KEY = "kastor-token"
# Through the client port, the cluster address a call is for: `kastor-target` metadata, or a
# channel user agent starting with this prefix (what Kastor's own client uses).
TARGET_METADATA_KEY = "kastor-target"
TARGET_USER_AGENT_PREFIX = "kastor-target/"

# Values up to this size travel inline in messages; larger ones go to the node's
# shared-memory store and are passed by location (Ray's max_direct_call_object_size).
INLINE_LIMIT = 100 * 1024
# Largest single gRPC message; big objects never travel inline, so this bounds abuse only.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
FETCH_CHUNK_BYTES = 4 * 1024 * 1024
# How long a new gRPC connection may take to open (rpc.CHANNEL_OPTIONS).
CONNECT_TIMEOUT_S = settings.CONNECT_TIMEOUT_S.get()

HEARTBEAT_INTERVAL_S = settings.HEARTBEAT_INTERVAL_S.get()
NODE_DEATH_TIMEOUT_S = settings.NODE_DEATH_TIMEOUT_S.get()
NODE_RECONNECT_GRACE_S = settings.NODE_RECONNECT_GRACE_S.get()
# Fencing: a worker runs calls only while its node agent renews the node's lease, which lasts
# this fraction of the head's node death timeout. A frozen or dead-declared node's workers thus
# stop before the head restarts their actors elsewhere (see runtime/node_lease.py).
WORKER_LEASE_FRACTION = 0.5
# The agent renews the node's lease this often per lease period, so a few late renewals (a
# loaded machine) do no harm.
LEASE_RENEWALS_PER_PERIOD = 5
# How long an owner keeps an idle task lease before handing the worker back: long enough
# for a tight `get(f.remote())` loop to reuse it, short enough not to starve others. Counted
# from the moment the lease went idle (TaskSubmitter._linger).
LEASE_LINGER_S = settings.LEASE_LINGER_S.get()
# A node agent checks its task leases this often, and takes back one whose worker has had no
# stream and no call for LEASE_RECLAIM_GRACE_S (a lost WorkerIdle, an owner gone before its first call).
LEASE_CHECK_INTERVAL_S = settings.LEASE_CHECK_INTERVAL_S.get()
LEASE_RECLAIM_GRACE_S = settings.LEASE_RECLAIM_GRACE_S.get()
# How often dropped ObjectRefs are swept when no new ref comes along to sweep them sooner.
REF_SWEEP_INTERVAL_S = 0.05
# Idle workers a node agent keeps started ahead, so actor creation skips process start-up.
PRESTART_WORKERS = settings.PRESTART_WORKERS.get()
# Workers in the node's own environment are forked from a pre-imported fork server (see forkserver).
FORK_SERVER = settings.FORK_SERVER.get()
# Idle workers a node keeps (Ray's num_workers_soft_limit; default: its CPU count, at least
# PRESTART_WORKERS). More idle ones, idle for IDLE_WORKER_KILL_S (Ray's
# idle_worker_killing_time_threshold_ms), are asked to exit; one that still serves objects or
# owns actors declines, as in Ray.
IDLE_WORKERS_KEPT = settings.IDLE_WORKERS_KEPT.get()
IDLE_WORKER_KILL_S = settings.IDLE_WORKER_KILL_S.get()
# Pickled functions and classes: refused above the first, warned about above the second (Ray's thresholds).
FUNCTION_SIZE_ERROR_BYTES = settings.FUNCTION_SIZE_ERROR_BYTES.get()
FUNCTION_SIZE_WARN_BYTES = settings.FUNCTION_SIZE_WARN_BYTES.get()
# How long a borrower asks an owner that does not answer before calling it dead (owner_fetch).
OWNER_UNREACHABLE_S = settings.OWNER_UNREACHABLE_S.get()
# How often a node agent frees the store files of owners that died (store_owners).
DEAD_OWNER_SWEEP_S = settings.DEAD_OWNER_SWEEP_S.get()
# Workers a node starts at once (Ray's maximum_startup_concurrency; 0: its CPU count). A worker
# that does not register within STARTUP_TIMEOUT_S is killed.
MAX_STARTING_WORKERS = settings.MAX_STARTING_WORKERS.get()
STARTUP_TIMEOUT_S = settings.STARTUP_TIMEOUT_S.get()

DEFAULT_HEAD_PORT: int = settings.HEAD_PORT.default  # type: ignore[assignment]
DEFAULT_CLIENT_PORT: int = settings.CLIENT_PORT.default  # type: ignore[assignment]
# A remote client (kastor://) whose connection drops keeps its job, refs and non-detached
# actors this long while it reconnects (laptop sleep, a port-forward restarting).
CLIENT_RECONNECT_GRACE_S = settings.CLIENT_RECONNECT_GRACE_S.get()
SESSION_ROOT = settings.SESSION_ROOT.get()


def default_store_root() -> str:
    """Shared memory when the host has it (zero-copy reads), else the temp dir."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else "/tmp"

# How long callers (drivers, workers, node agents' reports) wait for an unreachable head,
# e.g. through a restart, before giving up with a clear error.
HEAD_RECONNECT_TIMEOUT_S = settings.HEAD_RECONNECT_TIMEOUT_S.get()


def gcs_request_timeout_s() -> float:
    """How long a query of the head's tables (list_named_actors) waits for its answer before
    raising GetTimeoutError: Ray's gcs_server_request_timeout_seconds (60 s). Read per call."""
    return settings.GCS_REQUEST_TIMEOUT_S.get()


# A node agent that cannot reach the head for this long exits (its pod is then replaced).
NODE_HEAD_LOSS_TIMEOUT_S = settings.NODE_HEAD_LOSS_TIMEOUT_S.get()
# A restarted head gives drivers this long to reopen their job sessions before it treats
# their jobs as finished (and kills their non-detached actors).
JOB_RECONNECT_GRACE_S = settings.JOB_RECONNECT_GRACE_S.get()
JOB_SESSION_OPEN_TIMEOUT_S = settings.JOB_SESSION_OPEN_TIMEOUT_S.get()
# A restarted head waits this long for nodes to report their actors before re-placing
# actors that were mid-placement when it died (so none is started twice).
RECONCILE_GRACE_S = settings.RECONCILE_GRACE_S.get()


def actor_graceful_shutdown_timeout_s() -> float:
    """How long an actor ended gracefully (exit_actor, __ray_terminate__, out of scope) may run its
    __ray_shutdown__ and atexit handlers before its process exits anyway (Ray's
    actor_graceful_shutdown_timeout_ms). Read when used, so an actor's runtime_env can set it."""
    return settings.ACTOR_GRACEFUL_SHUTDOWN_TIMEOUT_S.get()
