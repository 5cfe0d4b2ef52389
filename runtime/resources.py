"""Resource arithmetic on {name: amount} maps ("CPU", "GPU", "memory", custom names)."""

from __future__ import annotations

from collections.abc import Mapping

_EPS = 1e-9


def fits(available: Mapping[str, float], required: Mapping[str, float]) -> bool:
    return all(available.get(name, 0.0) + _EPS >= amount for name, amount in required.items() if amount > 0)


def subtract(available: dict[str, float], amounts: Mapping[str, float]) -> None:
    for name, amount in amounts.items():
        if amount:
            available[name] = available.get(name, 0.0) - amount


def release(available: dict[str, float], amounts: Mapping[str, float]) -> None:
    for name, amount in amounts.items():
        if amount:
            available[name] = available.get(name, 0.0) + amount
