"""Streaming work through a cluster: a generator task, a shared queue and a process pool.

Why this exists: not all work is "call, then wait for one answer". A reader that yields
records as it finds them lets the driver start on the first one at once; a queue lets
producers and consumers that run on different workers meet without knowing each other; and
code written for `multiprocessing.Pool` moves to the cluster by changing one import.

Run it with ``python examples/streaming.py``. What the tasks print shows up here too,
prefixed with the task's name and process id.
"""

import kastor
from kastor.util.multiprocessing import Pool
from kastor.util.queue import Queue

LINES = ["the quick brown fox", "jumps over", "the lazy dog", "and runs away"]


@kastor.remote
def read_records(lines: list[str]):
    """Yields one record per line: the driver gets each as soon as it is read."""
    for number, line in enumerate(lines, start=1):
        print(f"read line {number}")
        yield {"line": number, "words": line.split()}


@kastor.remote
def produce(queue: Queue, words: list[str]) -> int:
    for word in words:
        queue.put(word)
    queue.put(None)  # one end marker per producer
    return len(words)


@kastor.remote
class Counter:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def consume(self, queue: Queue, producers: int) -> dict[str, int]:
        finished = 0
        while finished < producers:
            word = queue.get(timeout=60)
            if word is None:
                finished += 1
            else:
                self.counts[word] = self.counts.get(word, 0) + 1
        return self.counts


def word_length(word: str) -> int:
    return len(word)


def main() -> None:
    kastor.init()
    try:
        records = [kastor.get(ref) for ref in read_records.remote(LINES)]
        assert [r["line"] for r in records] == [1, 2, 3, 4]
        print(f"streamed {len(records)} records from a generator task")

        queue = Queue(maxsize=4)  # a small queue: producers wait for the consumer
        counter = Counter.remote()
        counted = counter.consume.remote(queue, producers=len(records))
        produced = kastor.get([produce.remote(queue, r["words"]) for r in records])
        counts = kastor.get(counted)
        assert sum(counts.values()) == sum(produced) and counts["the"] == 2
        print(f"counted {sum(produced)} words through a queue: 'the' x{counts['the']}")

        words = [w for r in records for w in r["words"]]
        with Pool(processes=2) as pool:
            lengths = pool.map(word_length, words)
        assert lengths == [len(w) for w in words]
        print(f"measured {len(lengths)} words with a process pool")
    finally:
        kastor.shutdown()
    print("streaming example OK")


if __name__ == "__main__":
    main()
