"""Task ids stay unique without a random draw per task (runtime/ids.py).

A task id is a per-process random prefix and a counter. The prefix must change in a forked
child (workers are forked from a pre-imported fork server, whose ids would otherwise repeat in
every worker), and threads that submit at once must get distinct ids.
"""

from __future__ import annotations

import os
import threading

from kastor.runtime import ids


def test_task_ids_are_distinct_across_threads():
    out: list[list[bytes]] = [[] for _ in range(4)]

    def draw(mine: list[bytes]) -> None:
        mine.extend(ids.new_task_id() for _ in range(5000))

    threads = [threading.Thread(target=draw, args=(mine,)) for mine in out]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drawn = [i for mine in out for i in mine]
    assert len(set(drawn)) == len(drawn) == 20000
    assert all(len(i) == 16 for i in drawn)


def test_a_forked_child_draws_other_task_ids():
    ids.new_task_id()  # the parent's counter has moved on; the child must not follow it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first ids, to the parent
        try:
            os.write(write, b"".join(ids.new_task_id() for _ in range(100)))
        finally:
            os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 1 << 16):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    child = {data[i:i + 16] for i in range(0, len(data), 16)}
    parent = {ids.new_task_id() for _ in range(100)}
    assert len(child) == 100
    assert {i[:8] for i in child}.isdisjoint({i[:8] for i in parent}), "the child kept the parent's id prefix"
