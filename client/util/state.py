"""Read the cluster's live actor and node tables from Python, like `ray.util.state`.

Rows are plain dicts (the same shape `kastor list --json` prints), so a restart count or a death
cause is one lookup away for tests, dashboards and operators alike.
"""

from __future__ import annotations

from typing import Any

from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.state_rows import actor_row, node_row

Filter = tuple[str, str, Any]


def list_actors(filters: list[Filter] | None = None) -> list[dict[str, Any]]:
    """Every actor the head knows, dead ones included; `filters` are `(key, "=" | "!=", value)`."""
    from kastor.api import _core

    reply = _core().head_call("ListActors", pb.ListRequest())
    return _filtered([actor_row(a) for a in reply.actors], filters)


def list_nodes(filters: list[Filter] | None = None) -> list[dict[str, Any]]:
    """Every node that registered, with total and available resources."""
    from kastor.api import _core

    reply = _core().head_call("ListNodes", pb.ListRequest())
    return _filtered([node_row(n) for n in reply.nodes], filters)


def _filtered(rows: list[dict[str, Any]], filters: list[Filter] | None) -> list[dict[str, Any]]:
    for key, op, value in filters or ():
        if op not in ("=", "!="):
            raise ValueError(f"Unsupported filter operator {op!r} for {key!r}: use '=' or '!='.")
        if rows and key not in rows[0]:
            raise ValueError(f"Unknown filter key {key!r}; known keys: {', '.join(rows[0])}.")
        rows = [r for r in rows if (str(r[key]) == str(value)) == (op == "=")]
    return rows
