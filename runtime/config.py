"""Tunables and environment names shared by every Kastor process.

They live in one place so that a pod spec, the CLI and an embedded cluster agree on how
settings travel (flags first, then these environment variables).
"""

import os

ENV_ADDRESS = "KASTOR_ADDRESS"          # head address a driver or node agent joins
ENV_TOKEN = "KASTOR_TOKEN"              # the cluster token itself
ENV_TOKEN_FILE = "KASTOR_TOKEN_FILE"    # or a file holding it (a mounted Secret)
ENV_NODE_IP = "KASTOR_NODE_IP"          # the address other processes reach this host on
ENV_NODE_ADDRESS = "KASTOR_NODE_ADDRESS"
ENV_NODE_ID = "KASTOR_NODE_ID"
ENV_WORKER_ID = "KASTOR_WORKER_ID"
ENV_STORE_DIR = "KASTOR_STORE_DIR"
ENV_SESSION_DIR = "KASTOR_SESSION_DIR"
ENV_WORKER_LEASE_S = "KASTOR_WORKER_LEASE_S"  # set by a node agent for its workers (fencing)

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

HEARTBEAT_INTERVAL_S = float(os.environ.get("KASTOR_HEARTBEAT_INTERVAL_S", "0.5"))
NODE_DEATH_TIMEOUT_S = float(os.environ.get("KASTOR_NODE_DEATH_TIMEOUT_S", "10"))
# Fencing: a worker runs calls only while its node agent renews its lease, which lasts this
# fraction of the head's node death timeout. A frozen or dead-declared node's workers thus stop
# before the head restarts their actors elsewhere (see NodeAgent.RenewWorkerLease).
WORKER_LEASE_FRACTION = 0.5
# How long an owner keeps an idle task lease before handing the worker back: long enough
# for a tight `get(f.remote())` loop to reuse it, short enough not to starve others.
LEASE_LINGER_S = 0.05
# A node agent checks its task leases this often, and takes back one whose worker has had no
# stream and no call for LEASE_RECLAIM_GRACE_S (a lost WorkerIdle, an owner gone before its first call).
LEASE_CHECK_INTERVAL_S = float(os.environ.get("KASTOR_LEASE_CHECK_INTERVAL_S", "1"))
LEASE_RECLAIM_GRACE_S = float(os.environ.get("KASTOR_LEASE_RECLAIM_GRACE_S", "5"))
# How often dropped ObjectRefs are swept when no new ref comes along to sweep them sooner.
REF_SWEEP_INTERVAL_S = 0.05
# Idle workers a node agent keeps started ahead, so actor creation skips process start-up.
PRESTART_WORKERS = int(os.environ.get("KASTOR_PRESTART_WORKERS", "2"))
# Idle workers a node keeps (Ray's num_workers_soft_limit; default: its CPU count, at least
# PRESTART_WORKERS). More idle ones, idle for IDLE_WORKER_KILL_S (Ray's
# idle_worker_killing_time_threshold_ms), are asked to exit; one that still serves objects or
# owns actors declines, as in Ray.
IDLE_WORKERS_KEPT = int(os.environ["KASTOR_IDLE_WORKERS_KEPT"]) if os.environ.get("KASTOR_IDLE_WORKERS_KEPT") else None
IDLE_WORKER_KILL_S = float(os.environ.get("KASTOR_IDLE_WORKER_KILL_S", "1"))
# Workers a node starts at once (Ray's maximum_startup_concurrency; 0: its CPU count). A worker
# that does not register within STARTUP_TIMEOUT_S is killed.
MAX_STARTING_WORKERS = int(os.environ.get("KASTOR_MAX_STARTING_WORKERS", "0"))
STARTUP_TIMEOUT_S = float(os.environ.get("KASTOR_STARTUP_TIMEOUT_S", "30"))

DEFAULT_HEAD_PORT = 6380
DEFAULT_CLIENT_PORT = 10001
# A remote client (kastor://) whose connection drops keeps its job, refs and non-detached
# actors this long while it reconnects (laptop sleep, a port-forward restarting).
CLIENT_RECONNECT_GRACE_S = float(os.environ.get("KASTOR_CLIENT_RECONNECT_GRACE_S", "120"))
SESSION_ROOT = os.environ.get("KASTOR_SESSION_ROOT", "/tmp/kastor_sessions")


def default_store_root() -> str:
    """Shared memory when the host has it (zero-copy reads), else the temp dir."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else "/tmp"

# How long callers (drivers, workers, node agents' reports) wait for an unreachable head,
# e.g. through a restart, before giving up with a clear error.
HEAD_RECONNECT_TIMEOUT_S = float(os.environ.get("KASTOR_HEAD_RECONNECT_TIMEOUT_S", "60"))


def gcs_request_timeout_s() -> float:
    """How long a query of the head's tables (list_named_actors) waits for its answer before
    raising GetTimeoutError: Ray's gcs_server_request_timeout_seconds (60 s). Read per call."""
    return float(os.environ.get("KASTOR_GCS_REQUEST_TIMEOUT_S", "60"))


# A node agent that cannot reach the head for this long exits (its pod is then replaced).
NODE_HEAD_LOSS_TIMEOUT_S = float(os.environ.get("KASTOR_NODE_HEAD_LOSS_TIMEOUT_S", "600"))
# A restarted head gives drivers this long to reopen their job sessions before it treats
# their jobs as finished (and kills their non-detached actors).
JOB_RECONNECT_GRACE_S = float(os.environ.get("KASTOR_JOB_RECONNECT_GRACE_S", str(HEAD_RECONNECT_TIMEOUT_S + 10)))
# A restarted head waits this long for nodes to report their actors before re-placing
# actors that were mid-placement when it died (so none is started twice).
RECONCILE_GRACE_S = float(os.environ.get("KASTOR_RECONCILE_GRACE_S", "3"))


def actor_graceful_shutdown_timeout_s() -> float:
    """How long an actor ended gracefully (exit_actor, __ray_terminate__, out of scope) may run its
    __ray_shutdown__ and atexit handlers before its process exits anyway (Ray's
    actor_graceful_shutdown_timeout_ms). Read when used, so an actor's runtime_env can set it."""
    return float(os.environ.get("KASTOR_ACTOR_GRACEFUL_SHUTDOWN_TIMEOUT_S", "30"))
