"""A worker's lease on life: fencing, so that an actor never has two live instances.

A worker starts calls only while its node's lease is live. The node agent renews one lease
for all its workers and publishes it in a shared file (node_lease), so a worker's check
before a call reads its own mapping of that file, without an RPC. The lease runs for half the
head's node death timeout D after the agent last renewed it, so a worker whose agent froze
(SIGSTOP, a stalled VM) or died stops before the head can have restarted its actor elsewhere
(the argument is in node_lease's docstring).

A lease that runs out suspends the worker: no call starts, calls wait. It resumes when the
agent renews the lease again, which after a lapse the agent does only while the head cannot
have declared the node dead meanwhile (the agent was merely slow, say on an overloaded
machine). A worker suspended for 2 D exits, because by then the head has most likely
restarted its actor elsewhere (callers that reach the head have moved on already, see
ActorSubmitter._watch_incarnation), and those that cannot must too: their streams break, and
they retry on the new instance (max_task_retries) or see ActorUnavailableError. A node the
head declared dead marks its lease fenced (and kills its workers): a worker that reads that
exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import NoReturn

from kastor.runtime.core import CoreWorker
from kastor.runtime.node_lease import NodeLeaseError, NodeLeaseReader, NodeLeaseState

log = logging.getLogger("kastor.worker")

WAIT_S = 0.05              # a call waiting for the lease to come back looks again this often
SUSPENDED_EXIT_FACTOR = 2  # a worker suspended this many node death timeouts exits


class WorkerLease:
    def __init__(self, core: CoreWorker, path: str):
        self.core = core
        try:
            self.reader = NodeLeaseReader(path)
        except NodeLeaseError as e:
            self.fence(str(e))
        self.expiry = 0.0  # the node lease's deadline (time.monotonic()) as last read; it never moves back
        self.suspended_since: float | None = None

    def valid(self) -> bool:
        """Whether a call may start now. Reads the node's lease only once the deadline last
        read has passed: until then it is valid whatever the agent wrote since."""
        now = time.monotonic()
        return now < self.expiry or now < self.refresh().deadline

    def refresh(self) -> NodeLeaseState:
        """Reads the node's lease; exits the process if the node was fenced (declared dead)."""
        try:
            state = self.reader.read()
        except NodeLeaseError as e:
            self.fence(str(e))
        if state.fenced:
            self.fence("its node agent fenced its lease: the head declared the node dead")
        self.expiry = max(self.expiry, state.deadline)
        return state

    def start(self) -> None:
        """Starts watching the lease on the core loop (see watch_forever)."""
        self.core.spawn(self.watch_forever())

    async def watch_forever(self) -> None:
        """Logs suspensions and resumptions, and exits once the lease has been out for 2 D
        (see the module doc). Wakes about once per lease period while the lease is live."""
        while True:
            state = self.refresh()
            now = time.monotonic()
            if now < state.deadline:
                if self.suspended_since is not None:
                    log.warning("lease renewed after %.1fs suspended: running calls again", now - self.suspended_since)
                    self.suspended_since = None
                await asyncio.sleep(state.deadline - now)
                continue
            if self.suspended_since is None:
                self.suspended_since = state.deadline
                log.warning("its node agent did not renew the node's lease in time (frozen, dead or overloaded): "
                            "no call starts until it does")
            if now - self.suspended_since >= SUSPENDED_EXIT_FACTOR * state.death_timeout_s:
                self.fence(f"its node agent has not renewed its lease for {now - self.suspended_since:.1f}s "
                           f"(frozen or dead), so the head has most likely declared the node dead")
            await asyncio.sleep(state.death_timeout_s / 10)

    def check(self) -> None:
        """Called before each call runs: without a live lease, no call starts; it waits."""
        while not self.valid():
            time.sleep(WAIT_S)

    def fence(self, why: str) -> NoReturn:
        log.error("worker exiting at once: %s. Its actor, if any, may already run on another node; "
                  "callers retry there (max_task_retries) or see ActorUnavailableError", why)
        logging.shutdown()
        os._exit(1)
