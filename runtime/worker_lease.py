"""A worker's lease on life: fencing, so that an actor never has two live instances.

A worker starts calls only while its node agent keeps renewing this lease. The lease lasts
half the head's node death timeout D, counted from when the worker *sent* the renewal, so a
worker whose agent froze (SIGSTOP, a stalled VM) or died stops before the head can have
restarted its actor elsewhere (the argument is in NodeAgent.RenewWorkerLease).

A lease that runs out suspends the worker: no call starts, calls wait. It resumes only on a
renewal that also proves the head cannot have declared the node dead meanwhile (its agent
was merely slow, say on an overloaded machine). A worker suspended for 2 D exits, because by
then the head has most likely restarted its actor elsewhere (callers that reach the head
have moved on already, see ActorSubmitter._watch_incarnation), and those that cannot must
too: their streams break, and they retry on the new instance (max_task_retries) or see
ActorUnavailableError. A node the head declared dead refuses renewals: the worker exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

import grpc
from kastor.runtime import config
from kastor.runtime.core import CoreWorker
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor.worker")

RENEWALS_PER_LEASE = 5  # renew this often per lease period, so a few slow answers do no harm
RETRY_S = 0.05          # after a failed renewal, try again this soon
SUSPENDED_EXIT_FACTOR = 2  # a worker suspended this many node death timeouts exits


class WorkerLease:
    def __init__(self, core: CoreWorker, period: float):
        self.core = core
        self.expiry = 0.0        # time.monotonic() until which this worker may start calls
        self.period = period     # the lease's length, as the agent last granted it
        self.suspended_since: float | None = None
        self._renewed = threading.Condition()

    def valid(self) -> bool:
        return time.monotonic() < self.expiry

    def start(self, registered_at: float) -> None:
        """The agent's acceptance of this worker's registration (sent at `registered_at`) is
        its first grant; from then on the core loop renews it."""
        with self._renewed:
            self.expiry = registered_at + self.period
            self._renewed.notify_all()
        self.core.spawn(self.renew_forever())

    async def renew(self) -> None:
        """One renewal; exits the process if the agent refuses (its node was declared dead)."""
        sent = time.monotonic()
        reply = await self.core.node_stub().RenewWorkerLease(
            pb.WorkerLeaseRequest(worker_id=self.core.worker_id), metadata=self.core.metadata,
            timeout=max(self.expiry - sent, self.period))
        if not reply.granted:
            self.fence("its node agent refused to renew its lease: the head declared the node dead")
        self.period = reply.lease_s
        lease = reply.lease_s
        if not self.valid():  # resuming: never past when the head may declare the node dead
            lease = min(lease, reply.fresh_for_s)
            if lease <= 0:
                return
        with self._renewed:
            self.expiry = max(self.expiry, sent + lease)
            self._renewed.notify_all()
        if self.suspended_since is not None:
            log.warning("lease renewed after %.1fs suspended: running calls again", sent - self.suspended_since)
            self.suspended_since = None

    async def renew_forever(self) -> None:
        """Renews the lease on the core loop; exits once it has been out for D (see the module doc)."""
        while True:
            now = time.monotonic()
            if now >= self.expiry:
                if self.suspended_since is None:
                    self.suspended_since = self.expiry
                    log.warning("its node agent did not renew this worker's lease in time (frozen, dead or "
                                "overloaded): no call starts until it does")
                if now - self.suspended_since >= SUSPENDED_EXIT_FACTOR * self.period / config.WORKER_LEASE_FRACTION:
                    self.fence(f"its node agent has not renewed its lease for {now - self.suspended_since:.1f}s "
                               f"(frozen or dead), so the head has most likely declared the node dead")
            try:
                await self.renew()
                await asyncio.sleep(self.period / RENEWALS_PER_LEASE)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(RETRY_S)

    def check(self) -> None:
        """Called before each call runs: without a live lease, no call starts; it waits."""
        if self.valid():
            return
        with self._renewed:
            while not self.valid():
                self._renewed.wait(0.1)

    def fence(self, why: str) -> None:
        log.error("worker exiting at once: %s. Its actor, if any, may already run on another node; "
                  "callers retry there (max_task_retries) or see ActorUnavailableError", why)
        logging.shutdown()
        os._exit(1)
