"""`kastor logs`: print a worker's, an actor's, the head's or a node agent's log file.

Reads the session folders of this machine (runtime/log_files.py). With no target it lists
the newest session's files; an actor is found through the head (its worker id).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from kastor.runtime import log_files
from kastor.runtime.protocol import kastor_pb2 as pb


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("logs", help="print a worker's or actor's log file (or list a session's logs)")
    p.add_argument("target", nargs="?", default=None,
                   help="a worker id (or its first digits), a live worker's pid, or a file name such as head.log")
    p.add_argument("--actor", default=None, help="an actor id (or its first digits): print its worker's log")
    p.add_argument("--session", default=None, help="a session folder (name or path); default: search all, newest first")
    p.add_argument("--tail", type=int, default=-1, help="print only the last N lines")
    return p


def run(args: argparse.Namespace, actors: Callable[[], list[pb.ActorInfo]]) -> int:
    try:
        if args.actor is None and args.target is None:
            for path in log_files.list_files(args.session):
                print(f"{os.path.getsize(path):>10}  {path}")
            return 0
        if args.actor is not None:
            path = log_files.find(worker_id=_actor_worker(args.actor, actors()), session=args.session)
        elif args.target.isdigit():
            path = log_files.find(pid=int(args.target), session=args.session)
        elif args.target.endswith(".log"):
            path = log_files.find(filename=args.target, session=args.session)
        else:
            path = log_files.find(worker_id=args.target, session=args.session)
        for line in log_files.read(path, args.tail):
            sys.stdout.write(line)
        return 0
    except (FileNotFoundError, LookupError, ValueError) as e:
        print(f"kastor logs: {e}", file=sys.stderr)
        return 1


def _actor_worker(actor_id: str, actors: list[pb.ActorInfo]) -> str:
    found = [a for a in actors if a.spec.actor_id.hex().startswith(actor_id.lower())]
    if len(found) != 1:
        raise LookupError(f"{'No' if not found else 'More than one'} actor's id starts with {actor_id!r} "
                          f"(`kastor list actors` shows them).")
    if not found[0].worker_id:
        state = pb.ActorState.Name(found[0].state)
        raise LookupError(f"The actor {actor_id} has not had a worker yet (it is {state}).")
    return found[0].worker_id.hex()
