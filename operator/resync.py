"""The periodic resync, without kopf timers, so resources need no finalizer for it.

kopf's per-object timers require a finalizer on every object (to stop the timer before the
object goes): every ActorCluster then needed the operator to be deleted, and a deletion
waited for a timer caught mid-reconcile. Instead, watch events keep a set of the resources
that exist, and one thread re-reconciles each of them every `interval` seconds on a small
pool, never running two resyncs of one resource at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("kastor.operator.resync")

Key = tuple[str, str, str]  # (plural, namespace, name)


class Resync:
    def __init__(self, reconcile: Callable[[str, str, str], object], interval: float, workers: int = 4):
        self._reconcile = reconcile
        self._interval = interval
        self._known: set[Key] = set()
        self._busy: set[Key] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="kastor-resync")
        self._thread = threading.Thread(target=self._loop, name="kastor-resync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 1)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def track(self, plural: str, namespace: str, name: str) -> None:
        with self._lock:
            self._known.add((plural, namespace, name))

    def forget(self, plural: str, namespace: str, name: str) -> None:
        with self._lock:
            self._known.discard((plural, namespace, name))

    def known(self) -> set[Key]:
        with self._lock:
            return set(self._known)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                due = [k for k in self._known if k not in self._busy]
                self._busy.update(due)
            for key in due:
                self._pool.submit(self._one, key)

    def _one(self, key: Key) -> None:
        try:
            if key in self.known():
                self._reconcile(*key)
        except Exception:  # a failed resync is retried at the next interval, like kopf's timers
            log.exception("resync of %s %s/%s failed", *key)
        finally:
            with self._lock:
                self._busy.discard(key)
