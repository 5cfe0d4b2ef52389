"""What to change in a Service the operator made, when the spec changed its type or ports (pure).

A Service is patched, not re-created: its cluster IP (what in-cluster clients resolved)
and its allocated node ports (what clients outside use) must survive a spec change.
"""

from __future__ import annotations

from typing import Any


def service_patch(desired: dict[str, Any], existing: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON merge patch that brings `existing` to the type and ports of `desired`, or None
    if they already match. Server-filled fields (protocol, a nodePort the server allocated)
    do not count as a difference; an allocated nodePort is kept while the type keeps one."""
    want, have = desired.get("spec") or {}, existing.get("spec") or {}
    want_type, have_type = want.get("type", "ClusterIP"), have.get("type", "ClusterIP")
    have_ports = {p.get("name"): p for p in have.get("ports") or []}
    ports = []
    for port in want.get("ports") or []:
        port = dict(port)
        old = have_ports.get(port.get("name")) or {}
        if want_type != "ClusterIP" and have_type != "ClusterIP" and "nodePort" not in port and old.get("nodePort"):
            port["nodePort"] = old["nodePort"]
        ports.append(port)
    same_ports = len(ports) == len(have_ports) and all(
        all((have_ports.get(p.get("name")) or {}).get(k) == v for k, v in p.items()) for p in ports)
    if want_type == have_type and same_ports:
        return None
    return {"spec": {"type": want_type, "ports": ports}}
