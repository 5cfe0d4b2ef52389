"""The operator's work queue: event-driven reconciles, a short requeue while a resource is
settling, and a long resync, without kopf timers (so resources need no finalizer for it).

kopf's per-object timers require a finalizer on every object (to stop the timer before the
object goes): every ActorCluster then needed the operator to be deleted, and a deletion
waited for a timer caught mid-reconcile. Instead, watch events keep a set of the resources
that exist, and one thread runs each one's reconcile when it is due, on a small pool, never
two of one resource at once (as controller-runtime's work queue does):

- `soon(key)`: due now. A pod event of the resource's children calls it; a burst of events
  coalesces into one reconcile (a key asked for while it runs is run once more afterwards).
- after a reconcile, the key is due again after what the reconcile returned: a few seconds
  while the resource is still settling (a head joining, a back-off, a node going NotReady),
  else the long resync interval (minutes), which only repairs what no event reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from kastor.operator.kube import namespace_terminating
from kastor.operator.wakeable import WakeableThread

log = logging.getLogger("kastor.operator.resync")

Key = tuple[str, str, str]  # (plural, namespace, name)


class Resync:
    """`reconcile(plural, ns, name)` returns the seconds until the resource is due again
    (None: the long `interval`; GONE: the resource no longer exists, forget it)."""

    GONE = -1.0

    def __init__(self, reconcile: Callable[[str, str, str], float | None], interval: float, workers: int = 4,
                 retry_s: float = 5.0):
        self._reconcile = reconcile
        self._interval = interval
        self._retry_s = min(retry_s, interval)
        self._known: set[Key] = set()
        self._due: dict[Key, float] = {}  # key -> monotonic time it is due
        self._busy: set[Key] = set()
        self._again: set[Key] = set()  # asked for while busy: run once more when done
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="kastor-resync")
        self._runner = WakeableThread("kastor-resync", self._loop)
        self._wake = self._runner.wake

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        self._runner.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def track(self, plural: str, namespace: str, name: str) -> None:
        """A resource exists: a new one is reconciled now, then as its reconciles say."""
        key = (plural, namespace, name)
        with self._wake:
            if key not in self._known:  # new (or seen for the first time since start): reconcile it now
                self._known.add(key)
                if key not in self._busy:
                    self._due.setdefault(key, time.monotonic())
                    self._wake.notify_all()

    def soon(self, plural: str, namespace: str, name: str, delay: float = 0.0) -> None:
        """Reconcile the resource within `delay` seconds (now, by default); coalesces with any earlier request."""
        key = (plural, namespace, name)
        with self._wake:
            self._known.add(key)
            if key in self._busy:
                self._again.add(key)
                return
            at = time.monotonic() + delay
            if at < self._due.get(key, float("inf")):
                self._due[key] = at
                self._wake.notify_all()

    def forget(self, plural: str, namespace: str, name: str) -> None:
        key = (plural, namespace, name)
        with self._wake:
            self._known.discard(key)
            self._due.pop(key, None)
            self._again.discard(key)

    def known(self) -> set[Key]:
        with self._wake:
            return set(self._known)

    def _loop(self) -> None:
        with self._wake:
            while not self._runner.stopping:
                now = time.monotonic()
                due = [k for k, at in self._due.items() if at <= now and k not in self._busy]
                for key in due:
                    del self._due[key]
                    self._busy.add(key)
                    self._pool.submit(self._one, key)
                upcoming = [at for k, at in self._due.items() if k not in self._busy]
                self._wake.wait(timeout=max(0.0, min(upcoming) - now) if upcoming else None)

    def _one(self, key: Key) -> None:
        delay: float | None = None
        try:
            delay = self._reconcile(*key)
        except Exception as e:  # retried soon: an API or head error is usually brief
            if self._runner.stopping:  # the operator is stopping: its loop (and the pod cache on it) is going away
                log.debug("reconcile of %s %s/%s cut short by the operator's stop", *key)
                return
            if namespace_terminating(e):  # it goes with its namespace: one line, no retry storm
                log.info("%s %s/%s: its namespace is being deleted, so nothing more is created there", *key)
                delay = self._interval
            else:
                log.exception("reconcile of %s %s/%s failed; retrying in %g s", *key, self._retry_s)
                delay = self._retry_s
        finally:
            with self._wake:
                self._busy.discard(key)
                if delay == self.GONE and key not in self._again:
                    self._known.discard(key)
                if key in self._known:
                    at = time.monotonic() + (0.0 if key in self._again else
                                             self._interval if delay is None else max(0.0, delay))
                    self._again.discard(key)
                    self._due[key] = min(at, self._due.get(key, float("inf")))
                self._wake.notify_all()
