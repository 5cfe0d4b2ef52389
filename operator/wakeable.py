"""A daemon thread with a condition to wake it and a stop that waits for it: the operator's
background loops (the work queue's `Resync`, the `CheckpointWatch`) each run on one."""

from __future__ import annotations

import threading
from collections.abc import Callable


class WakeableThread:
    """Runs `body` on a daemon thread named `name`. `body` waits on `wake` (a Condition, which
    also guards the owner's shared state) and returns once `stopping` is set; `stop()` sets it,
    wakes the thread and waits up to `join_s` for it to end."""

    def __init__(self, name: str, body: Callable[[], None], join_s: float = 5.0):
        self.wake = threading.Condition()
        self.stopping = False
        self._join_s = join_s
        self._thread = threading.Thread(target=body, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify_all()
        self._thread.join(self._join_s)
