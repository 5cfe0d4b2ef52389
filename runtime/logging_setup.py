"""One logging setup for Kastor's long-running processes (head, node agent, worker, operator).

Their logs go to files per process (see log_files) and are read side by side, so every line
says when, how severe, which kind of process and which logger: `2026-01-01 12:00:00,000 INFO
head kastor.head: ...`. Each entry point calls `configure` once, first thing in its main.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

_FORMAT = "%(asctime)s %(levelname)s {role}%(name)s: %(message)s"


def configure(role: str | None, *, verbose: bool = False, quiet: Iterable[str] = ()) -> None:
    """Logs at INFO (DEBUG if `verbose`) to stderr, each line tagged with `role` ("head", "node",
    "worker"; None: no tag). Loggers in `quiet` (a chatty library's) log WARNING and up only,
    unless `verbose`. Leaves logging alone if the process configured it already (basicConfig)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format=_FORMAT.format(role=f"{role} " if role else ""))
    if not verbose:
        for name in quiet:
            logging.getLogger(name).setLevel(logging.WARNING)
