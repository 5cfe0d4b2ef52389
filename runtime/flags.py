"""The command-line flags of Kastor's processes, declared once.

`kastor start --head` runs a head and a node agent, and passes its flags on to them; the
head (`python -m kastor.runtime.head`), the node agent and `kastor actor-pod` also take them
directly. Each flag is defined here once, with its environment variable (see `settings`) as
its default, so the entry points cannot drift apart. Flags win over the environment.
"""

from __future__ import annotations

import argparse

from kastor.runtime import settings


def add_join_flags(p: argparse.ArgumentParser, *, address_required: bool = False,
                   address_help: str = "head address host:port (or KASTOR_ADDRESS)") -> None:
    """--address, --token, --token-file: what a process needs to join a cluster.

    `address_required`: the flag must be given unless KASTOR_ADDRESS is set."""
    address = settings.ADDRESS.get()
    p.add_argument("--address", default=address, required=address_required and address is None, help=address_help)
    add_token_flags(p)


def add_token_flags(p: argparse.ArgumentParser) -> None:
    """--token / --token-file; unset, the token comes from KASTOR_TOKEN_FILE or KASTOR_TOKEN (see auth)."""
    p.add_argument("--token", default=None, help="the cluster token (prefer --token-file)")
    p.add_argument("--token-file", default=None, help="a file holding the cluster token (or KASTOR_TOKEN_FILE)")


def add_node_ip_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node-ip", default=settings.NODE_IP.get(),
                   help="address other processes reach this host on (a pod IP in Kubernetes; or KASTOR_NODE_IP)")


def add_redis_flags(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    """--redis-address, --redis-password-file, --cluster-id. `required`: unless set in the environment."""
    redis_address, cluster_id = settings.REDIS_ADDRESS.get(), settings.CLUSTER_ID.get()
    p.add_argument("--redis-address", default=redis_address, required=required and redis_address is None,
                   help="keep the head's state in Redis (host:port, redis:// or rediss://) so a head restart "
                        "loses nothing; password from KASTOR_REDIS_PASSWORD or --redis-password-file")
    p.add_argument("--redis-password-file", default=settings.REDIS_PASSWORD_FILE.get())
    p.add_argument("--cluster-id", default=cluster_id, required=required and cluster_id is None,
                   help="names this cluster's state (required with --redis-address)")


def add_head_flags(p: argparse.ArgumentParser, *, client_port_by_default: bool) -> None:
    """The head's own flags: its port, its Redis, and the optional client and dashboard ports.

    `client_port_by_default`: serve the client port (KASTOR_CLIENT_PORT's default, 10001) when
    neither the flag nor the variable says otherwise, as `kastor start --head` does. A bare
    head process (the embedded cluster of `kastor.init()`) serves it only when asked, so two
    local clusters never compete for one port. -1 means none for both ports.
    """
    p.add_argument("--port", type=int, default=settings.HEAD_PORT.get(), help="head port (or KASTOR_HEAD_PORT)")
    add_redis_flags(p)
    client_port = settings.CLIENT_PORT.get() if client_port_by_default else settings.CLIENT_PORT.get_if_set()
    p.add_argument("--client-port", type=int, default=client_port,
                   help="port for kastor:// clients outside the cluster network (0: any free port, -1: none)")
    p.add_argument("--dashboard-port", type=int, default=settings.DASHBOARD_PORT.get(),
                   help="HTTP port for Prometheus /metrics and /api/actors, /api/nodes (token required; "
                        "0: any free port, -1: none, the default; pods use 8265)")


def add_node_resource_flags(p: argparse.ArgumentParser) -> None:
    """What a node agent offers: --num-cpus (default: the host's count), --num-gpus, --memory, --resources,
    and the labels work selects it by (--labels)."""
    p.add_argument("--num-cpus", type=float, default=settings.NUM_CPUS.get())
    p.add_argument("--num-gpus", type=float, default=settings.NUM_GPUS.get())
    p.add_argument("--memory", type=float, default=settings.MEMORY.get())
    p.add_argument("--resources", default=settings.RESOURCES.get(),
                   help='custom resources as JSON, e.g. \'{"accelerator": 2}\'')
    p.add_argument("--labels", default=settings.NODE_LABELS.get(),
                   help="node labels that label_selector= picks nodes by, as key=value pairs separated by commas, "
                        "e.g. 'region=us-west,cpu-family=amd' (or KASTOR_NODE_LABELS)")


def add_spilling_flag(p: argparse.ArgumentParser) -> None:
    """--object-spilling-directory: where a node agent spills objects its store cannot hold (see spilling)."""
    p.add_argument("--object-spilling-directory", default=settings.OBJECT_SPILLING_DIR.get(),
                   help="where the node writes objects that do not fit in its shared-memory store (a local disk "
                        "with room; or KASTOR_OBJECT_SPILLING_DIR; default: the session folder's spill/)")


def add_child_flags(p: argparse.ArgumentParser) -> None:
    """Hidden flags a parent passes to the processes it starts (see launcher.Child)."""
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
