"""Watching tasks make progress through a shared actor.

Why this exists: ``kastor.get`` tells you when work is finished, not how far
along it is. A small actor can collect progress reports: each task gets the
actor's handle as an ordinary argument and calls it as it goes, while the
driver polls the actor until everything is done.

The work is a Monte Carlo estimate of pi: each task throws random points at a
unit square and counts how many land inside the quarter circle.

Run it with ``python examples/progress.py``.
"""

import math
import random
import time

import kastor

NUM_TASKS = 4
SAMPLES_PER_TASK = 200_000
REPORT_EVERY = 20_000
DEADLINE_S = 120.0


@kastor.remote
class ProgressActor:
    def __init__(self, total_samples: int):
        self.total_samples = total_samples
        self.done_per_task: dict[int, int] = {}

    def report_progress(self, task_id: int, samples_done: int) -> None:
        self.done_per_task[task_id] = samples_done

    def get_progress(self) -> float:
        return sum(self.done_per_task.values()) / self.total_samples


@kastor.remote
def sampling_task(num_samples: int, task_id: int, progress_actor) -> int:
    rng = random.Random(task_id)  # seeded, so every run gives the same estimate
    inside = 0
    for i in range(1, num_samples + 1):
        x, y = rng.random(), rng.random()
        if x * x + y * y <= 1.0:
            inside += 1
        if i % REPORT_EVERY == 0:
            # Fire and forget: the task does not wait for the actor to answer.
            progress_actor.report_progress.remote(task_id, i)
    # The last report is awaited, so the task only ends once it is counted.
    kastor.get(progress_actor.report_progress.remote(task_id, num_samples))
    return inside


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def main() -> None:
    kastor.init()
    try:
        total = NUM_TASKS * SAMPLES_PER_TASK
        progress = ProgressActor.remote(total)
        refs = [sampling_task.remote(SAMPLES_PER_TASK, i, progress) for i in range(NUM_TASKS)]

        deadline = time.monotonic() + DEADLINE_S
        last_shown = -1
        while True:
            fraction = kastor.get(progress.get_progress.remote())
            percent = int(fraction * 100)
            if percent != last_shown:
                print(f"progress: {percent:3d}%")
                last_shown = percent
            if fraction >= 1.0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"sampling did not finish within {DEADLINE_S}s")
            time.sleep(0.1)

        inside = sum(kastor.get(refs))
        pi = 4 * inside / total
        print(f"pi is about {pi:.5f} (error {abs(pi - math.pi):.5f}) from {total:,} samples")
        check(abs(pi - math.pi) < 0.01, "the estimate should be close to pi")
    finally:
        kastor.shutdown()
    print("progress example OK")


if __name__ == "__main__":
    main()
