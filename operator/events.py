"""Kubernetes Events for what a user must see (bad specs, failures), posted once per change."""

from __future__ import annotations

import logging
from typing import Any

import kopf

log = logging.getLogger("kastor.operator")


def post(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """An Event on the custom resource; never lets an event failure break a reconcile."""
    try:
        kopf.event(body, type=type_, reason=reason, message=message)
    except Exception as e:  # events are best-effort, like kubectl's
        log.warning("could not post event %s on %s: %s", reason, body.get("metadata", {}).get("name"), e)
