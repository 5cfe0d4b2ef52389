"""Checkpoints a DetachedActor's status mirrors, noticed without asking the API server or the head.

An actor with `spec.state.store: redis` writes its checkpoints to the cluster's Redis itself:
the head never sees them, so its watch (`head_watch`) cannot say when one was saved. Rather
than reconciling such an actor every `KASTOR_OPERATOR_POLL_S` (GETs of the DetachedActor, its
cluster and its token Secret, and two head RPCs), the operator reads the checkpoint's header
(`state_status.stat_fields`: its time and size, never the state) that often, and queues the
actor's reconcile only when it differs from what its status shows. Where the checkpoints are
(GetCheckpointStore) is asked once per head, not per read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kastor.operator import state_status
from kastor.operator.head_client import HeadClient
from kastor.operator.head_watch import Target
from kastor.operator.wakeable import WakeableThread

log = logging.getLogger("kastor.operator.checkpoint_watch")

FIELDS = ("lastCheckpointTime", "lastCheckpointBytes")


@dataclass
class _Followed:
    head: Target
    actor: tuple[str, str]  # (namespace, name) in the GCS
    shown: dict[str, Any]  # the checkpoint fields its status shows


class CheckpointWatch:
    """`follow(ns, name, ...)` keeps reading a live actor's checkpoint header every `period_s`;
    `on_change(ns, name)` is called (on the watch's thread) when it differs from the status."""

    def __init__(self, head: HeadClient, on_change: Callable[[str, str], None], period_s: float):
        self._head = head
        self._on_change = on_change
        self._period_s = period_s
        self._followed: dict[tuple[str, str], _Followed] = {}
        self._where: dict[Target, Any] = {}  # head -> its CheckpointStoreReply
        self._runner = WakeableThread("kastor-checkpoint-watch", self._loop)
        self._wake = self._runner.wake

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        self._runner.stop()

    def follow(self, namespace: str, name: str, head: Target, actor: tuple[str, str], status: dict[str, Any]) -> None:
        with self._wake:
            self._followed[(namespace, name)] = _Followed(head, actor, {k: status.get(k) for k in FIELDS
                                                                         if status.get(k) is not None})

    def forget(self, namespace: str, name: str) -> None:
        with self._wake:
            self._followed.pop((namespace, name), None)

    def followed(self) -> set[tuple[str, str]]:
        with self._wake:
            return set(self._followed)

    def _loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait(self._period_s)
                if self._runner.stopping:
                    return
                todo = list(self._followed.items())
            for key, followed in todo:
                try:
                    where = self._store_of(followed.head)
                except Exception as e:  # the head away for now: asked again next time
                    log.debug("cannot ask the head of %s/%s where checkpoints are: %s", *key, e)
                    continue
                try:
                    now = state_status.stat_fields(where, followed.actor)
                except Exception as e:  # Redis away for now: the actor's own reconciles say so
                    log.debug("cannot read the checkpoint of %s/%s: %s", *key, e)
                    continue
                if now != followed.shown:
                    with self._wake:
                        if self._followed.get(key) is followed:
                            del self._followed[key]  # its reconcile follows it again with the new status
                    self._on_change(*key)

    def _store_of(self, head: Target) -> Any:
        where = self._where.get(head)
        if where is None:
            where = self._where[head] = self._head.checkpoint_store(head.address, head.token, head.ca)
        return where
