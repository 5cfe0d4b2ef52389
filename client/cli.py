"""The `kastor` command (the installed script): the runtime's commands (`kastor.runtime.cli`)
plus the programs written against the public API, which the runtime may not import.

`kastor actor-pod` (`kastor.kubernetes.actor_pod`) is a driver program: it calls
`kastor.init` and creates its actor with `@kastor.remote(...).options(...)` like a user's
script. The operator's pods run it by this name, so images of any version understand it.
"""

from __future__ import annotations

import sys

from kastor.kubernetes import actor_pod
from kastor.runtime import cli

ACTOR_POD = cli.Command("actor-pod", "run a DetachedActor's pod (used by the operator)", actor_pod.build_parser,
                        lambda args: actor_pod.main(parsed=args))
COMMANDS = (ACTOR_POD,)


def main(argv: list[str] | None = None) -> int:
    """`kastor ...`: parses `argv` (default: the command line) and returns the exit code."""
    return cli.main(argv, COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
