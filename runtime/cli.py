"""The `kastor` command: start/stop cluster processes, and read the cluster's state.

`kastor start --head` runs the head and a node agent; `kastor start --address HOST:PORT`
runs a node agent that joins it. With `--block` they stay in the foreground (what a pod
runs); without, they are detached and `kastor stop` ends them (all of this user's, or one
cluster with `--address`, or one session with `--session`). Settings come from flags or
the environment (KASTOR_ADDRESS, KASTOR_TOKEN[_FILE], KASTOR_NODE_IP, KASTOR_NUM_CPUS, ...).

The installed `kastor` script is `kastor.cli`: these commands plus the ones written against
the public API (`kastor actor-pod`), which the runtime may not import.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from kastor.runtime import auth, config, flags, launcher, node_labels, sessions, settings, tls
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.state_rows import actor_row, format_resources, format_shape, group_row, node_row


@dataclass(frozen=True)
class Command:
    """A `kastor` subcommand defined above the runtime: `kastor.cli` adds the programs written
    against the public API (`kastor actor-pod`), which this module may not import."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], object]  # fills the subcommand's parser
    run: Callable[[argparse.Namespace], int]  # the parsed arguments -> the exit code


def main(argv: list[str] | None = None, commands: Sequence[Command] = ()) -> int:
    """The `kastor` command: the runtime's subcommands, plus `commands` (see `Command`)."""
    try:
        return _main(argv, commands)
    except settings.SettingError as e:  # a bad KASTOR_* value: say which, without a traceback
        print(f"kastor: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None, commands: Sequence[Command]) -> int:
    parser = argparse.ArgumentParser(prog="kastor", description="Kastor: Ray-style actors, Kubernetes-native.")
    parser.add_argument("--version", action="version", version=f"kastor {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    start = sub.add_parser("start", help="start a head (--head) or a node agent joining one (--address)")
    start.add_argument("--head", action="store_true", help="start the head (control service) and a node agent")
    flags.add_join_flags(start, address_help="head to join (host:port; or KASTOR_ADDRESS)")
    flags.add_head_flags(start, client_port_by_default=True)  # with --head
    start.add_argument("--node-port", type=int, default=0, help="node agent port (0: any free port)")
    flags.add_node_ip_flag(start)
    flags.add_node_resource_flags(start)
    flags.add_spilling_flag(start)
    start.add_argument("--no-node", action="store_true", help="with --head: run no node agent beside the head")
    start.add_argument("--block", action="store_true", help="stay in the foreground until stopped (for pods)")

    stop = sub.add_parser("stop", help="stop the cluster processes you started here with `kastor start`")
    stop.add_argument("--address", default=None,
                      help="stop only the cluster at this head address (its head and the nodes that joined it)")
    stop.add_argument("--session", default=None, help="stop only this session (its folder or folder name)")

    for name, help_text in (("status", "summarise the cluster's nodes and actors"),):
        p = sub.add_parser(name, help=help_text)
        _add_query_args(p)
    lister = sub.add_parser("list", help="list actors, nodes or placement groups")
    lister.add_argument("what", choices=["actors", "nodes", "placement-groups"])
    _add_query_args(lister)
    from kastor.runtime import cli_logs
    _add_query_args(cli_logs.add_parser(sub))
    for command in commands:
        command.add_arguments(sub.add_parser(command.name, help=command.help))

    clean = sub.add_parser("redis-clean", help="delete one cluster's state from Redis (when the cluster is gone)")
    flags.add_redis_flags(clean, required=True)

    args = parser.parse_args(argv)
    if args.command == "start":
        return _start(args)
    if args.command == "stop":
        return _stop(args.address, args.session)
    for command in commands:
        if args.command == command.name:
            return command.run(args)
    if args.command == "redis-clean":
        return _redis_clean(args)
    if args.command == "logs":
        return cli_logs.run(args, lambda: _fetch_actors(args))
    return _query(args)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("kastor")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _add_query_args(p: argparse.ArgumentParser) -> None:
    flags.add_join_flags(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


# ---- start / stop ----

def _start(args: argparse.Namespace) -> int:
    if not args.head and not args.address:
        print("kastor start: pass --head to start a cluster, or --address HOST:PORT to join one.", file=sys.stderr)
        return 2
    if args.head and args.redis_address and not args.cluster_id:
        print("kastor start: --redis-address needs --cluster-id (or KASTOR_CLUSTER_ID): it names this cluster's "
              "keys, and a restarted head finds its state by it.", file=sys.stderr)
        return 2
    try:
        node_labels.parse_node_labels(args.labels, "--labels / KASTOR_NODE_LABELS")
    except (TypeError, ValueError) as e:
        print(f"kastor start: {e}", file=sys.stderr)
        return 2
    session_dir = launcher.new_session_dir("head" if args.head else "node")
    logs = os.path.join(session_dir, "logs")
    token = auth.resolve_token(args.token, args.token_file)
    generated = not token
    if not token:
        if not args.head:
            print("kastor start: joining a cluster needs its token (--token, --token-file or KASTOR_TOKEN).",
                  file=sys.stderr)
            return 2
        token = auth.generate_token()
    token_file = sessions.write_token(session_dir, token)
    env = dict(os.environ)
    env[config.ENV_TOKEN] = token
    env.pop(config.ENV_TOKEN_FILE, None)
    embedded = args.block  # foreground children die with us; detached ones outlive this command
    children: list[launcher.Child] = []
    dashboard = client = ""
    try:
        address = args.address
        if args.head:
            head_args = ["--port", str(args.port), "--node-ip", args.node_ip]
            if args.cluster_id:
                head_args += ["--cluster-id", args.cluster_id]
            if args.redis_address:
                head_args += ["--redis-address", args.redis_address]
            if args.redis_password_file:
                head_args += ["--redis-password-file", args.redis_password_file]
            # Always passed, -1 too: the head would otherwise fall back to KASTOR_CLIENT_PORT from
            # the environment it inherits, and a --client-port -1 here would not switch it off.
            head_args += ["--client-port", str(args.client_port), "--dashboard-port", str(args.dashboard_port)]
            head = launcher.Child("kastor.runtime.head", head_args, env, os.path.join(logs, "head.log"), embedded)
            children.append(head)
            address = head.wait_ready()
            dashboard, client = head.ready_info.get("dashboard", ""), head.ready_info.get("client", "")
        if not args.no_node or not args.head:
            node = launcher.Child("kastor.runtime.node_agent", _node_args(args, address, session_dir), env,
                                  os.path.join(logs, "node.log"), embedded)
            children.append(node)
            node.wait_ready()
    except RuntimeError as e:
        for child in children:
            child.stop()
        print(f"kastor start: {e}", file=sys.stderr)
        if generated and args.redis_address:
            print("kastor start: no token was given, so this command generated a new one. A head restarted on "
                  "a cluster's Redis state needs that cluster's token: pass --token-file PATH or set "
                  "KASTOR_TOKEN_FILE.", file=sys.stderr)
        return 1
    record = {"kind": "head" if args.head else "node", "address": address, "token_file": token_file,
              "procs": [sessions.describe(c.proc.pid, c.module) for c in children],
              "session_dir": session_dir, "started": time.time()}
    record_path = sessions.save(os.path.basename(session_dir), record)
    print(f"Kastor {'head' if args.head else 'node'} started; cluster address {address}")
    print(f"  token file: {token_file}   logs: {logs}")
    if generated and args.redis_address:
        print("  keep it:    this token was generated, and a head restarted on this Redis state needs it "
              "(--token-file); copy the file somewhere safe: stopped sessions' folders are pruned")
    if args.head:
        print(f"  connect:    KASTOR_TOKEN_FILE={token_file} python -c "
              f"\"import kastor; kastor.init(address='{address}')\"")
        print(f"  join:       kastor start --address {address} --token-file {token_file}")
        if client:
            print(f"  notebooks:  kastor.init('kastor://{client}') with the token")
        if dashboard:
            print(f"  dashboard:  {dashboard}/metrics, /api/actors, /api/nodes "
                  f"(header 'Authorization: Bearer <token>')")
    if not args.block:
        return 0
    return _supervise(children, record_path)


def _node_args(args: argparse.Namespace, address: str, session_dir: str) -> list[str]:
    out = ["--address", address, "--port", str(args.node_port), "--node-ip", args.node_ip, "--session-dir", session_dir]
    for flag, value in (("--num-cpus", args.num_cpus), ("--num-gpus", args.num_gpus), ("--memory", args.memory),
                        ("--resources", args.resources), ("--labels", args.labels),
                        ("--object-spilling-directory", args.object_spilling_directory)):
        if value is not None:
            out += [flag, str(value)]
    return out


def _supervise(children: list[launcher.Child], record_path: str) -> int:
    """Foreground mode: exit when asked, or as soon as one child dies (so a pod restarts)."""
    stopping = False

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    try:
        while not stopping:
            for child in children:
                if child.proc.poll() is not None:
                    print(f"kastor: {child.module} exited with code {child.proc.returncode}", file=sys.stderr)
                    code = child.proc.returncode or 1
                    stopping = True
            if not stopping:
                time.sleep(0.2)  # a supervisor's poll of its children; signals cut it short
    finally:
        for child in reversed(children):
            child.stop()
        try:
            os.unlink(record_path)
        except FileNotFoundError:
            pass
    return code


def _redis_clean(args: argparse.Namespace) -> int:
    from kastor.runtime import redis_cleanup, redis_store
    try:
        password = redis_store.resolve_password(args.redis_password_file)
        deleted = redis_cleanup.clean(args.redis_address, args.cluster_id, password)
    except (OSError, redis_cleanup.CleanupError) as e:
        print(f"kastor redis-clean: {e}", file=sys.stderr)
        return 1
    print(f"deleted {deleted} key(s) of cluster {args.cluster_id!r} from {args.redis_address}")
    return 0


def _stop(address: str | None = None, session: str | None = None) -> int:
    """Stops what this user started here with `kastor start`: all of it, or one cluster or session.

    A PID is signalled only if it is still the process the record names (same start time, a
    Kastor command line): PIDs are reused, and a record may outlive its processes.
    """
    records = sessions.all_records()  # also drops the records of clusters no longer running
    if address:
        records = [(p, r) for p, r in records if r.get("address") == address]
    if session:
        name = os.path.basename(os.path.normpath(session))
        records = [(p, r) for p, r in records if os.path.basename(r.get("session_dir", "")) == name]
    if not records:
        which = f" at {address}" if address else f" in session {session}" if session else ""
        print(f"kastor stop: no running cluster process{which} started by you with `kastor start` on this machine.")
        return 1 if address or session else 0
    for path, record in reversed(records):
        stopped = [p["pid"] for p in sessions.processes(record) if _terminate(p)]
        sessions.remove(path)
        print(f"stopped {record.get('kind')} of cluster {record.get('address')} "
              f"(session {os.path.basename(record.get('session_dir', '?'))}, pids {stopped})")
    return 0


def _terminate(proc: dict, grace: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after `grace`, each only while `proc` is still the recorded process."""
    if not sessions.is_running(proc):
        return False
    try:
        os.kill(proc["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not sessions.is_running(proc):
            return True
        time.sleep(0.05)  # polling a process we do not parent: there is nothing to wait on
    if sessions.is_running(proc):
        try:
            os.kill(proc["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True


# ---- status / list ----

def _query(args: argparse.Namespace) -> int:
    address, token = args.address, auth.resolve_token(args.token, args.token_file)
    if not address or not token:
        record = sessions.latest()
        if record is None and not address:
            print("kastor: no cluster address (pass --address or set KASTOR_ADDRESS).", file=sys.stderr)
            return 2
        if record is not None:
            address = address or record["address"]
            token = token or sessions.read_token(record)
    try:
        nodes, actors = asyncio.run(_fetch_state(address, token or ""))
        groups = asyncio.run(_fetch_groups(address, token or ""))
    except grpc.aio.AioRpcError as e:
        hint = tls.unreachable_hint(address) if e.code() == grpc.StatusCode.UNAVAILABLE else ""
        print(f"kastor: cannot query the head at {address}: {e.code().name} {e.details()}.{hint}", file=sys.stderr)
        return 1
    if args.command == "list":
        if args.what == "nodes":
            rows = [node_row(n) for n in nodes]
            if not args.json:
                rows = [{**r, "resources (used/total)": format_resources(r["used"], r["total"]),
                         "holders": len(r["leases"])} for r in rows]
        elif args.what == "placement-groups":
            rows = [group_row(g) for g in groups]
        else:
            rows = [actor_row(a) for a in actors]
        _print_rows(rows, args.json)
        return 0
    summary = {
        "address": address,
        "nodes": [node_row(n) for n in nodes],
        "actors": {state: sum(1 for a in actors if pb.ActorState.Name(a.state) == state)
                   for state in ("PENDING", "ALIVE", "RESTARTING", "DEAD")},
        "infeasible": _infeasible(nodes, actors),
        "placement_groups": [group_row(g) for g in groups if g.state != pb.PG_REMOVED],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    _print_status(summary)
    return 0


def _infeasible(nodes: list[pb.NodeInfo], actors: list[pb.ActorInfo]) -> list[dict]:
    """Work no node can ever fit, as Ray's status lists it: task shapes (merged over the nodes
    that were asked) and actors, each with the jobs waiting for it."""
    by_shape: dict[tuple, dict] = {}
    for n in nodes:
        for d in node_row(n)["infeasible"]:
            key = (tuple(sorted(d["shape"].items())), repr(d.get("labels")))
            row = by_shape.setdefault(key, {**d, "jobs": []})
            row["jobs"] = sorted(set(row["jobs"]) | set(d["jobs"]))
    rows = list(by_shape.values())
    for a in actors:
        if a.pending_reason and a.state in (pb.PENDING, pb.RESTARTING):
            rows.append({"shape": {k: v for k, v in a.spec.required.items() if v}, "kind": "actor",
                         "jobs": [int.from_bytes(a.spec.job_id, "big")], "actor": a.spec.class_name,
                         "actor_id": a.spec.actor_id.hex(), "reason": a.pending_reason})
    return rows


def _print_status(summary: dict) -> None:
    nodes = summary["nodes"]
    print(f"Kastor cluster at {summary['address']}")
    print(f"  nodes: {sum(1 for n in nodes if n['alive'])} alive, {sum(1 for n in nodes if not n['alive'])} dead")
    for n in nodes:
        print(f"    {n['node_id']}  {n['address']:<22} {'ALIVE' if n['alive'] else 'DEAD':<6} "
              f"used: {format_resources(n['used'], n['total'])}")
        for lease in n["leases"]:
            who = f"actor {lease['actor_id'][:8]}" if lease["kind"] == "actor" else f"task lease of {lease['owner']}"
            blocked = " (blocked in get: CPU lent back)" if lease["blocked"] else ""
            print(f"      job {lease['job']:<4} {who}  worker {lease['worker_id'][:8]} pid {lease['pid']}  "
                  f"holds {format_shape(lease['resources'])}{blocked}")
    print("  actors: " + ", ".join(f"{v} {k.lower()}" for k, v in summary["actors"].items()))
    for g in summary["placement_groups"]:
        print(f"  placement group {g['placement_group_id'][:12]} {g['name'] or '-'} {g['strategy']} {g['state']}: "
              f"{len(g['bundles'])} bundles, reserved on {sorted(set(g['bundles_to_node_id'].values())) or 'none yet'}")
    if summary["infeasible"]:
        print("  infeasible (no node can ever fit these; they wait until one joins):")
        for d in summary["infeasible"]:
            what = f"actor {d['actor']} {d['actor_id'][:8]}" if d["kind"] == "actor" else "tasks"
            jobs = ", ".join(str(j) for j in d["jobs"])
            labels = f" on nodes labelled {', then '.join(map(str, d['labels']))}" if d.get("labels") else ""
            print(f"    {format_shape(d['shape'])}{labels}: {what} of job {jobs}")


def _fetch_actors(args: argparse.Namespace) -> list[pb.ActorInfo]:
    """The head's actor table, for `kastor logs --actor` (same address and token rules as `list`)."""
    address, token = args.address, auth.resolve_token(args.token, args.token_file)
    record = sessions.latest() if not address or not token else None
    if record is not None:
        address, token = address or record["address"], token or sessions.read_token(record)
    if not address:
        raise LookupError("no cluster address to look the actor up (pass --address or set KASTOR_ADDRESS)")
    try:
        return asyncio.run(_fetch_state(address, token or ""))[1]
    except grpc.aio.AioRpcError as e:
        raise LookupError(f"cannot query the head at {address}: {e.code().name} {e.details()}") from None


async def _fetch_state(address: str, token: str) -> tuple[list[pb.NodeInfo], list[pb.ActorInfo]]:
    async with tls.aio_channel(address) as channel:
        stub = pb_grpc.HeadStub(channel)
        md = auth.metadata(token)
        nodes = await stub.ListNodes(pb.ListRequest(), metadata=md, timeout=10)
        actors = await stub.ListActors(pb.ListRequest(), metadata=md, timeout=10)
    return list(nodes.nodes), list(actors.actors)


async def _fetch_groups(address: str, token: str) -> list[pb.PlacementGroupInfo]:
    async with tls.aio_channel(address) as channel:
        reply = await pb_grpc.HeadStub(channel).ListPlacementGroups(pb.ListRequest(), metadata=auth.metadata(token),
                                                                    timeout=10)
    return list(reply.groups)


def _print_rows(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("(none)")
        return
    columns = [c for c in rows[0] if not isinstance(rows[0][c], (dict, list))]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in columns))


if __name__ == "__main__":
    sys.exit(main())
