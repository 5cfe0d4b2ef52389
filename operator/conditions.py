"""Status conditions, Kubernetes style: a transition time that moves only on a change."""

from __future__ import annotations

import datetime
from typing import Any


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(conditions: list[dict[str, Any]], type_: str, ok: bool, reason: str, message: str,
                  generation: int | None = None) -> list[dict[str, Any]]:
    """A copy of `conditions` with `type_` set; lastTransitionTime kept unless the status flips."""
    status = "True" if ok else "False"
    out = [dict(c) for c in conditions if c.get("type") != type_]
    previous = next((c for c in conditions if c.get("type") == type_), None)
    since = previous["lastTransitionTime"] if previous and previous.get("status") == status and \
        previous.get("lastTransitionTime") else now()
    condition = {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since}
    if generation is not None:
        condition["observedGeneration"] = generation
    out.append(condition)
    return sorted(out, key=lambda c: c["type"])


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def same_ignoring_time(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True if two status dicts differ only in condition timestamps (no patch needed)."""
    def strip(status: dict[str, Any]) -> dict[str, Any]:
        out = dict(status)
        out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                             for c in status.get("conditions") or []]
        return out
    return strip(a) == strip(b)
