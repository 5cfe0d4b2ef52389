"""The head's durable state, behind a small async key-value interface.

The head keeps its working tables in memory and writes every change through a Store
before acknowledging it, then reloads them all from the Store when it starts. The
in-memory Store serves the embedded cluster; a Redis Store (same interface) lets a head
restart lose nothing.
"""

from __future__ import annotations

from typing import Protocol


class Store(Protocol):
    async def put(self, table: str, key: str, value: bytes) -> None: ...

    async def get(self, table: str, key: str) -> bytes | None: ...

    async def delete(self, table: str, key: str) -> None: ...

    async def get_all(self, table: str) -> dict[str, bytes]: ...

    async def close(self) -> None: ...

    async def reachable(self, timeout_s: float) -> bool:
        """Whether the store answers within `timeout_s` (the operator's watch reports a change)."""
        ...


class InMemoryStore:
    """Process-local tables: the state lives exactly as long as the head process."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, bytes]] = {}

    async def put(self, table: str, key: str, value: bytes) -> None:
        self._tables.setdefault(table, {})[key] = value

    async def get(self, table: str, key: str) -> bytes | None:
        return self._tables.get(table, {}).get(key)

    async def delete(self, table: str, key: str) -> None:
        self._tables.get(table, {}).pop(key, None)

    async def get_all(self, table: str) -> dict[str, bytes]:
        return dict(self._tables.get(table, {}))

    async def close(self) -> None:
        self._tables.clear()

    async def reachable(self, timeout_s: float) -> bool:
        return True  # it lives in the head itself
