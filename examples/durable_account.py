"""The bank account of persistent_account.py, with durable state instead of hand-written persistence.

Why this exists: persistent_account.py shows the pattern Ray users write by hand (load in
``__init__``, save after each change, a pluggable store class). Here the actor is a plain
class, and ``state=kastor.state.Checkpoint(...)`` does the rest: after every call the balance
is saved, before the caller gets the result, and a restarted actor continues from the last
checkpoint instead of re-running its constructor. So no acknowledged deposit is lost when its
worker is SIGKILLed, again and again, while deposits keep coming.

It also shows:

* ``__getstate__`` leaving a resource (an open audit file) out of the checkpoint, and
  ``__kastor_restored__`` reopening it after a restore;
* ``kastor.kill(actor, keep_state=True)``: a new actor of the same name resumes the balance,
  while a plain ``kastor.kill`` deletes the checkpoint.

The store here is a directory (``FileStore``). On a cluster whose head keeps its state in Redis,
``Checkpoint()`` with no store uses that Redis (``RedisStore()``); in Kubernetes, a
DetachedActor's ``spec.state`` sets the same up with a PersistentVolumeClaim.

Run it with ``python examples/durable_account.py``.
"""

import os
import signal
import tempfile
import threading
import time

import kastor
from kastor.exceptions import ActorUnavailableError
from kastor.state import Checkpoint, FileStore


class Account:
    def __init__(self, owner: str, audit_path: str, opening_balance: int = 0):
        self.owner = owner
        self.balance = opening_balance
        self.audit_path = audit_path
        self.audit = open(audit_path, "a")  # noqa: SIM115 - open for the actor's lifetime

    def __getstate__(self) -> dict:
        """What the checkpoint keeps: everything but the open file."""
        return {k: v for k, v in self.__dict__.items() if k != "audit"}

    def __kastor_restored__(self) -> None:
        """Called after a restore (instead of __init__): reopen what the state left out."""
        self.audit = open(self.audit_path, "a")  # noqa: SIM115

    def deposit(self, amount: int) -> int:
        self.balance += amount
        self.audit.write(f"deposit {amount}\n")
        self.audit.flush()
        return self.balance

    def read(self) -> int:
        return self.balance

    def pid(self) -> int:
        return os.getpid()


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        check(time.monotonic() < deadline, "timed out")
        time.sleep(0.01)


def deposits_survive_sigkills(store: FileStore, audit: str) -> None:
    print("== deposits while the worker is SIGKILLed three times ==")
    durable = kastor.remote(max_restarts=-1, state=Checkpoint(store=store, every="call"))(Account)
    account = durable.options(name="ada").remote("ada", audit, opening_balance=100)
    acked: list[int] = []
    uncertain = 0
    stop = threading.Event()

    def depositor() -> None:
        nonlocal uncertain
        while not stop.is_set():
            try:
                acked.append(kastor.get(account.deposit.remote(1)))
            except ActorUnavailableError:  # in flight at a crash: it may or may not have happened
                uncertain += 1

    thread = threading.Thread(target=depositor)
    thread.start()
    for _ in range(3):
        target = len(acked) + 20
        wait_for(lambda target=target: len(acked) >= target or not thread.is_alive())
        os.kill(kastor.get(account.pid.remote()), signal.SIGKILL)
    target = len(acked) + 20
    wait_for(lambda: len(acked) >= target or not thread.is_alive())
    check(thread.is_alive(), "the depositor should only ever see ActorUnavailableError")
    stop.set()
    thread.join()

    balance = kastor.get(account.read.remote())
    print(f"{len(acked)} deposits acknowledged, {uncertain} in flight at a crash; balance {balance}")
    check(balance >= 100 + len(acked), "no acknowledged deposit may be lost")
    check(balance <= 100 + len(acked) + uncertain, "only deposits that were sent count")

    kastor.kill(account, keep_state=True)
    again = durable.options(name="ada", get_if_exists=True).remote("ada", audit, opening_balance=0)
    check(kastor.get(again.read.remote()) == balance, "a new actor of that name resumes the checkpoint")
    print(f"killed with keep_state=True, created again: balance {kastor.get(again.read.remote())}")
    kastor.kill(again)  # this time the checkpoint goes too
    fresh = durable.options(name="ada").remote("ada", audit, opening_balance=5)
    check(kastor.get(fresh.read.remote()) == 5, "after a plain kill, the name starts afresh")
    print("killed (checkpoint deleted), created again: balance", kastor.get(fresh.read.remote()))
    kastor.kill(fresh)


def main() -> None:
    kastor.init()
    try:
        with tempfile.TemporaryDirectory(prefix="kastor-durable-") as tmp:
            deposits_survive_sigkills(FileStore(os.path.join(tmp, "checkpoints")), os.path.join(tmp, "audit.log"))
    finally:
        kastor.shutdown()
    print("durable account example OK")


if __name__ == "__main__":
    main()
