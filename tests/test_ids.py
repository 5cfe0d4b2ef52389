"""Task ids stay unique without an os.urandom call per task (runtime/ids.py): threads that
submit at once get distinct ids. (A forked child's ids: tests/test_call_overhead.py.)"""

from __future__ import annotations

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
