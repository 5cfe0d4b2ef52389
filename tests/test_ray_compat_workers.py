"""What Ray promises about worker processes (issue 13): OMP_NUM_THREADS follows the CPUs a task
or actor asked for."""

import os

import kastor
import pytest


def _define_omp():
    @kastor.remote
    def omp():
        return os.getpid(), os.environ.get("OMP_NUM_THREADS")

    @kastor.remote
    class OmpActor:
        def omp(self):
            return os.environ.get("OMP_NUM_THREADS")

    return omp, OmpActor


omp, OmpActor = _define_omp()


@pytest.mark.skipif("OMP_NUM_THREADS" in os.environ, reason="the user's OMP_NUM_THREADS wins in every worker")
def test_omp_num_threads_follows_num_cpus(embedded_cluster):
    assert kastor.get(omp.remote())[1] == "1", "a task holds 1 CPU by default"
    assert kastor.get(omp.options(num_cpus=2).remote())[1] == "2"
    assert kastor.get(omp.options(num_cpus=0.25).remote())[1] == "1", "a fraction rounds up to 1"
    assert kastor.get(omp.options(num_cpus=0).remote())[1] == "1"
    mine = {"env_vars": {"OMP_NUM_THREADS": "7"}}
    assert kastor.get(omp.options(num_cpus=2, runtime_env=mine).remote())[1] == "7", "the user's value wins"
    assert kastor.get(omp.remote())[1] == "1", "a task's value does not leak into the next"
    for options, expected in (({}, "1"), ({"num_cpus": 2}, "2"), ({"num_cpus": 0.5}, "1"),
                              ({"runtime_env": mine}, "7")):
        actor = OmpActor.options(**options).remote()
        assert kastor.get(actor.omp.remote()) == expected, options
        kastor.kill(actor)  # frees its CPUs now (a 2-CPU actor fills the node)


def _define_threads():
    @kastor.remote
    def thread_names():
        import threading
        return sorted(t.name for t in threading.enumerate())

    @kastor.remote
    class Threads:
        def names(self):
            import threading
            return sorted(t.name for t in threading.enumerate())

        def noisy(self, i):
            print("line", i)
            return i

    return thread_names, Threads


thread_names, Threads = _define_threads()


def test_workers_run_no_threads_of_their_own_beyond_the_core_loop(embedded_cluster):
    """Ray counts a worker's threads (test_worker_thread_count). Kastor's Python threads in a
    worker are the main thread, the core's event loop and gRPC's poller; the rest are gRPC's
    C threads, whose pool grows with the machine's cores."""
    expected = 3
    assert len(kastor.get(thread_names.remote())) == expected, kastor.get(thread_names.remote())
    actor = Threads.remote()
    kastor.get([actor.noisy.remote(i) for i in range(50)])  # output shipping starts no threads
    names = kastor.get(actor.names.remote())
    assert len(names) == expected, names


def _define_readers():
    @kastor.remote
    def read_all(refs):
        kastor.get(refs)  # values the driver holds ready: this get does not block
        return os.getpid()

    return read_all


read_all = _define_readers()


def test_getting_ready_values_keeps_the_cpu_so_workers_are_reused(embedded_cluster):
    """Ray's test_release_resources_race: a task that gets values already made keeps its CPU,
    so a 2-CPU node runs 200 such tasks on its 2 workers instead of starting one per task."""
    import numpy as np

    refs = [kastor.put(np.zeros(1 << 20, dtype=np.uint8)) for _ in range(10)]  # in the shared store
    pids = set(kastor.get([read_all.remote(refs) for _ in range(200)], timeout=300))
    assert len(pids) <= 2, pids
