"""The event loops Kastor runs its own work on (the core's, the client port's frame relay).

uvloop cuts the cost of a loop iteration, which every call pays several times: about +40%
batched tasks and a few percent sync actor calls on the 2-core bench machine. KASTOR_UVLOOP=0
(or uvloop missing) falls back to asyncio's loop.
"""

from __future__ import annotations

import asyncio

from kastor.runtime import settings


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop for a thread of Kastor's own (user code never runs on it)."""
    if settings.UVLOOP.get():
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()
