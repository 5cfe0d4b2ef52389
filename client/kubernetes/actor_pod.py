"""`kastor actor-pod`: the entrypoint of a DetachedActor's pod (Kubernetes operator).

A driver program written against the public API, so it lives in the public package (the
runtime may not import `kastor`); `kastor.cli` adds it to the runtime's `kastor` command.

The pod joins the cluster as a node that advertises a resource no other node has (one
unit of `--resource`), then creates the named detached actor requiring that resource, or
finds it if it already exists. So the head places the actor on this pod; when the pod
dies, the head marks the actor RESTARTING (per max_restarts) and re-places the same actor,
same id, when the operator's replacement pod joins, so existing handles keep working.

The pod then watches the actor in the GCS and exits non-zero, its last line saying why,
if the actor dies (that line becomes the pod's termination message): EXIT_ACTOR_DEAD once
the GCS declares it dead. A spec that can never work (unimportable class, arguments that
don't fit the constructor) exits with EXIT_BAD_SPEC. For both, the operator stops
replacing the pod instead of crash-looping.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import signal
import sys
import threading
from typing import Any

import kastor
from kastor.actor import ActorClass, actor_id_of, undecorated
from kastor.runtime import auth, config, context, flags, launcher, retry
from kastor.runtime.k8s_contract import EXIT_ACTOR_DEAD, EXIT_BAD_SPEC, EXIT_FAILED
from kastor.runtime.protocol import kastor_pb2 as pb


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="kastor actor-pod", description=__doc__.splitlines()[0])
    flags.add_join_flags(p, address_required=True)
    p.add_argument("--class", dest="actor_class", required=True, help="import path module:Class")
    p.add_argument("--name", required=True, help="actor name in the GCS")
    p.add_argument("--namespace", required=True, help="Kastor namespace of the actor")
    p.add_argument("--args-json", default="[]")
    p.add_argument("--kwargs-json", default="{}")
    p.add_argument("--max-restarts", type=int, default=0)
    p.add_argument("--max-task-retries", type=int, default=0)
    p.add_argument("--max-concurrency", type=int, default=1)
    p.add_argument("--num-cpus", type=float, default=1.0)
    p.add_argument("--num-gpus", type=float, default=0.0)
    p.add_argument("--resource", required=True, help="the custom resource only this pod advertises")
    flags.add_node_ip_flag(p)
    p.add_argument("--state-json", default=None,
                   help="durable state (DetachedActor spec.state): {store: redis|volume, every, maxBytes, onCorrupt, "
                        "directory}")
    return p


def parse_state(state_json: str | None) -> Any:
    """The `state=` option from `--state-json` (None: no durable state, Ray's behaviour)."""
    if not state_json:
        return None
    from kastor.runtime.checkpoint_policy import Checkpoint
    from kastor.runtime.checkpoint_stores import FileStore, RedisStore
    try:
        raw = json.loads(state_json)
        every = raw.get("every", "call")
        store = FileStore(raw["directory"]) if raw.get("store") == "volume" else RedisStore()
        return Checkpoint(store=store, every=int(every) if str(every).isdigit() else every,
                          max_bytes=int(raw.get("maxBytes", 64 * 2**20)), on_corrupt=raw.get("onCorrupt", "fail"))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise BadSpec("InvalidState", f"--state-json {state_json}: {type(e).__name__}: {e}") from None


class PodStopping(Exception):
    """The pod was asked to terminate: the watch ends (exit 0)."""


class NodeExited(Exception):
    """The pod's node agent exited: the actor cannot run here any more."""

    def __init__(self, code: int | None):
        super().__init__(f"the node agent exited with code {code}")
        self.code = code


# Watching the actor through a head that is restarting: ask again every second (the node agent
# reconnects meanwhile), until the pod stops or its node agent exits.
WATCH_RETRY = retry.RetryPolicy(initial_s=1.0, max_s=1.0, retry_on=(Exception,), fatal=(PodStopping, NodeExited))


class BadSpec(Exception):
    """The spec can never produce a running actor; `reason` is a CamelCase cause."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def load_class(path: str) -> type:
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as e:  # ImportError, AttributeError, or the module raising on import
        raise BadSpec("ClassNotImportable", f"cannot import {path!r}: {type(e).__name__}: {e}") from None
    if isinstance(obj, ActorClass):  # a class already decorated with @kastor.remote
        obj = undecorated(obj)
    if not isinstance(obj, type):
        raise BadSpec("ClassNotImportable", f"{path!r} is a {type(obj).__name__}, not a class")
    return obj


def parse_arguments(cls: type, args_json: str, kwargs_json: str) -> tuple[list[Any], dict[str, Any]]:
    """The constructor arguments, checked against its signature before anything starts."""
    try:
        args, kwargs = json.loads(args_json), json.loads(kwargs_json)
    except json.JSONDecodeError as e:
        raise BadSpec("InvalidArguments", f"args/kwargs are not valid JSON: {e}") from None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise BadSpec("InvalidArguments", "args must be a JSON list and kwargs a JSON object")
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as e:
        raise BadSpec("ArgumentsMismatch", f"args {args_json} / kwargs {kwargs_json} don't fit "
                                           f"{cls.__name__}(): {e}") from None
    except ValueError:
        pass  # no introspectable signature (a C type): let the constructor decide
    return args, kwargs


def _say(line: str) -> None:
    print(f"actor-pod: {line}", flush=True)


def main(argv: list[str] | None = None, parsed: argparse.Namespace | None = None) -> int:
    args = parsed or build_parser().parse_args(argv)
    try:
        cls = load_class(args.actor_class)
        ctor_args, ctor_kwargs = parse_arguments(cls, args.args_json, args.kwargs_json)
        args.state = parse_state(args.state_json)
    except BadSpec as e:
        _say(str(e))
        return EXIT_BAD_SPEC
    token = auth.resolve_token(args.token, args.token_file)
    if not token:
        _say("NoToken: no cluster token (KASTOR_TOKEN, KASTOR_TOKEN_FILE or --token)")
        return EXIT_BAD_SPEC
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node = _start_node(args, token)
    if node is None:
        return EXIT_FAILED
    try:
        return _run_actor(args, token, cls, ctor_args, ctor_kwargs, node, stop)
    finally:
        node.stop()


def _start_node(args: argparse.Namespace, token: str) -> launcher.Child | None:
    session_dir = launcher.new_session_dir("actor-pod")
    env = dict(os.environ)
    env[config.ENV_TOKEN] = token
    env.pop(config.ENV_TOKEN_FILE, None)
    node_args = ["--address", args.address, "--node-ip", args.node_ip, "--num-cpus", f"{args.num_cpus:g}",
                 "--num-gpus", f"{args.num_gpus:g}", "--resources", json.dumps({args.resource: 1}),
                 "--session-dir", session_dir]
    node = launcher.Child("kastor.runtime.node_agent", node_args, env,
                          os.path.join(session_dir, "logs", "node.log"), embedded=True)
    try:
        address = node.wait_ready()
    except RuntimeError as e:
        _say(f"NodeFailed: the node agent could not join the head at {args.address}: {e}")
        return None
    _say(f"node agent joined {args.address} as {address}, advertising {args.resource}")
    return node


def _run_actor(args: argparse.Namespace, token: str, cls: type, ctor_args: list[Any], ctor_kwargs: dict[str, Any],
               node: launcher.Child, stop: threading.Event) -> int:
    kastor.init(address=args.address, token=token, namespace=args.namespace)
    try:
        actor_class = kastor.remote(cls)
        handle = actor_class.options(
            name=args.name, namespace=args.namespace, lifetime="detached", get_if_exists=True,
            max_restarts=args.max_restarts, max_task_retries=args.max_task_retries,
            max_concurrency=args.max_concurrency, num_cpus=args.num_cpus, num_gpus=args.num_gpus or None,
            resources={args.resource: 1}, state=args.state).remote(*ctor_args, **ctor_kwargs)
        actor_id = actor_id_of(handle)
        _say(f"actor {args.name!r} (namespace {args.namespace!r}, id {actor_id.hex()}) registered")
        core = context.core
        version, last_state = 0, None

        def poll() -> pb.GetActorReply:
            if stop.is_set():
                raise PodStopping
            if node.proc.poll() is not None:
                raise NodeExited(node.proc.returncode)
            return core.head_call("GetActor", pb.GetActorRequest(actor_id=actor_id, after_version=version,
                                                                 timeout_s=1.0), timeout=10)

        def on_retry(error: BaseException, attempt: int, delay: float) -> None:
            _say(f"cannot reach the head ({type(error).__name__}); retrying")

        while True:
            try:
                reply = retry.call(poll, WATCH_RETRY, on_retry=on_retry, sleep=stop.wait)
            except PodStopping:
                break
            except NodeExited as e:
                _say(f"NodeExited: the node agent exited with code {e.code}")
                return EXIT_FAILED
            if not reply.found:
                _say(f"ActorLost: actor {args.name!r} is no longer known to the GCS")
                return EXIT_FAILED
            info = reply.info
            version = info.version
            state = pb.ActorState.Name(info.state)
            if state != last_state:
                _say(f"actor {args.name!r} is {state}" + (f" at {info.address}" if info.address else "")
                     + (f" (restarts {info.num_restarts})" if info.num_restarts else ""))
                last_state = state
            if info.state == pb.DEAD:
                reason = "ConstructorFailed" if info.death_error.data or info.death_error.location.path else "ActorDied"
                _say(f"{reason}: actor {args.name!r} is dead after {info.num_restarts} restart(s): "
                     f"{info.death_cause}")
                return EXIT_ACTOR_DEAD
        _say("stopping: the pod was asked to terminate")
        return 0
    finally:
        kastor.shutdown()


if __name__ == "__main__":
    sys.exit(main())
