"""Actor-call patterns beside the plain sync call, for the lanes of runtime/fast_lane.py.

    python bench/fanout.py                     # 20 actors, 100 rounds of each pattern
    KASTOR_FAST_ACTOR_CALLS=0 python bench/fanout.py   # the same on the core loop's path

- fan-out: `get([a.f.remote() for a in actors])`: every call takes its actor's lane, and
  the get reads them in turn on its own thread;
- burst: `get([a.f.remote() for _ in range(n)])` to one actor: the first call takes the
  lane, and the others wait on the loop's path until its result is back (one round trip
  per burst that the loop's path does not pay).
"""

from __future__ import annotations

import argparse
import os
import time

import kastor


@kastor.remote(num_cpus=0)
class Target:
    def f(self) -> int:
        return 0


def rounds_per_s(fn, rounds: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return rounds / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actors", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args()
    kastor.init(num_cpus=2)
    actors = [Target.remote() for _ in range(args.actors)]
    kastor.get([a.f.remote() for a in actors])
    fan = rounds_per_s(lambda: kastor.get([a.f.remote() for a in actors]), args.rounds)
    burst = rounds_per_s(lambda: kastor.get([actors[0].f.remote() for _ in range(args.actors)]), args.rounds)
    print(f"# lanes={os.environ.get('KASTOR_FAST_ACTOR_CALLS', '1')} actors={args.actors} "
          f"loadavg={' '.join(open('/proc/loadavg').read().split()[:3])}")
    print(f"fanout_rounds_per_s {fan:.1f}")
    print(f"burst_rounds_per_s  {burst:.1f}")
    kastor.shutdown()


if __name__ == "__main__":
    main()
