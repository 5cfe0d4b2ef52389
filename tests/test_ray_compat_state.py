"""Ray's state and debugging promises (issue 13.10): OutOfMemoryError, list_tasks, timeline,
get_log and `kastor logs`, against a real local cluster."""

import json
import os
import subprocess
import sys
import uuid

import kastor
import pytest
from kastor.runtime import log_files
from kastor.util.state import get_log, list_tasks
from support import DEADLINE_S, wait_until


def _define():
    @kastor.remote
    def shout(marker):
        print(marker)
        return os.getpid(), kastor.get_runtime_context().get_worker_id()

    @kastor.remote(max_retries=0)
    def broken():
        raise RuntimeError("broken on purpose")

    @kastor.remote
    class Speaker:
        def say(self, marker):
            print(marker)
            return kastor.get_runtime_context().get_actor_id()

        def shout(self, marker):
            """The pid of a worker that stays (a task's idle worker may be reaped at any moment)."""
            print(marker)
            return os.getpid(), kastor.get_runtime_context().get_worker_id()

    return shout, broken, Speaker


shout, broken, Speaker = _define()


def test_out_of_memory_error_has_rays_base():
    assert issubclass(kastor.exceptions.OutOfMemoryError, kastor.exceptions.RayError)
    assert not issubclass(kastor.exceptions.OutOfMemoryError, kastor.exceptions.RayTaskError)


def test_list_tasks_shows_what_this_driver_submitted(embedded_cluster):
    ok = shout.remote("listed")
    bad = broken.remote()
    speaker = Speaker.remote()
    said = speaker.say.remote("hello")
    kastor.get([ok, said])
    with pytest.raises(RuntimeError):
        kastor.get(bad)
    rows = {r["task_id"]: r for r in list_tasks()}
    assert rows[ok.task_id().hex()]["state"] == "FINISHED"
    assert rows[ok.task_id().hex()]["type"] == "NORMAL_TASK"
    assert rows[bad.task_id().hex()]["state"] == "FAILED"
    assert rows[said.task_id().hex()]["type"] == "ACTOR_TASK"
    named = list_tasks(filters=[("name", "=", "Speaker.say")])  # other modules' Speaker.say may be listed too
    assert said.task_id().hex() in {r["task_id"] for r in named}
    assert ok.task_id().hex() not in {r["task_id"] for r in named}
    assert {r["name"] for r in named} == {"Speaker.say"}
    for r in (rows[ok.task_id().hex()], rows[said.task_id().hex()]):
        assert r["submitted_at"] <= r["start_time"] <= r["end_time"]


def test_timeline_is_a_chrome_trace_of_the_drivers_tasks(embedded_cluster, tmp_path):
    ref = shout.remote("traced")
    kastor.get(ref)
    events = kastor.timeline()
    mine = [e for e in events if e["args"]["task_id"] == ref.task_id().hex()]
    assert len(mine) == 1
    event = mine[0]
    assert event["ph"] == "X" and event["name"].endswith("shout") and event["dur"] >= 0 and event["ts"] > 0
    path = tmp_path / "trace.json"
    assert kastor.timeline(filename=str(path)) is None
    assert ref.task_id().hex() in {e["args"]["task_id"] for e in json.loads(path.read_text())}


def test_get_log_reads_an_actors_and_a_workers_log(embedded_cluster):
    marker = f"actor-says-{uuid.uuid4().hex}"
    speaker = Speaker.remote()
    actor_id = kastor.get(speaker.say.remote(marker))
    wait_until(lambda: any(marker in line for line in get_log(actor_id=actor_id)), "the actor's line in its log")
    task_marker = f"task-says-{uuid.uuid4().hex}"
    pid, worker_id = kastor.get(shout.remote(task_marker))
    wait_until(lambda: any(task_marker in line for line in get_log(worker_id=worker_id)), "the task's line")
    assert len(list(get_log(worker_id=worker_id, tail=1))) == 1
    pid_marker = f"pid-says-{uuid.uuid4().hex}"
    pid, _ = kastor.get(speaker.shout.remote(pid_marker))
    wait_until(lambda: any(pid_marker in line for line in get_log(pid=pid)), "a live worker's log found by its pid")
    with pytest.raises(FileNotFoundError, match="No live Kastor worker has pid"):
        get_log(pid=os.getpid())


def _kastor_logs(*args):
    return subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "logs", *args], capture_output=True,
                          text=True, timeout=DEADLINE_S)


def test_kastor_logs_prints_a_workers_log(embedded_cluster):
    marker = f"cli-says-{uuid.uuid4().hex}"
    speaker = Speaker.remote()
    pid, worker_id = kastor.get(speaker.shout.remote(marker))
    wait_until(lambda: marker in _kastor_logs(worker_id[:8]).stdout, "the line through `kastor logs WORKER`")
    assert marker in _kastor_logs(str(pid)).stdout, "a live worker's pid finds its log"
    # This cluster's session: other clusters on the machine have theirs under the same root.
    session = os.path.dirname(os.path.dirname(log_files.find(worker_id=worker_id)))
    listing = _kastor_logs("--session", session).stdout
    assert f"worker-{worker_id[:12]}.log" in listing and "node.log" in listing
    missing = _kastor_logs("ffffffffffff")
    assert missing.returncode == 1 and "No log file" in missing.stderr


def test_list_jobs_shows_this_driver(embedded_cluster):
    from kastor.util.state import list_jobs

    mine = list_jobs(filters=[("job_id", "=", embedded_cluster.job_id)])
    assert len(mine) == 1, list_jobs()
    job = mine[0]
    assert (job["type"], job["status"], job["connected"]) == ("DRIVER", "RUNNING", True)
    assert job["namespace"] == embedded_cluster.namespace and job["driver_info"]["pid"] == os.getpid()


def _parent_of_children():
    """An actor class of each kind whose method submits a task and an actor call and reports
    their ids and what list_tasks() in its process says their parent is (Ray's
    test_actor_parent_task_correct, through the public state API)."""

    @kastor.remote
    def child():
        return None

    @kastor.remote
    class ChildActor:
        def child(self):
            return None

    def parent(child_actor):
        from kastor.util.state import list_tasks
        refs = [child_actor.child.remote(), child.remote()]
        kastor.get(refs)
        me = kastor.get_runtime_context().get_task_id()
        listed = {r["task_id"] for r in list_tasks(filters=[("parent_task_id", "=", me)])}
        return {ref.task_id().hex() for ref in refs}, listed

    @kastor.remote
    class Plain:
        def run(self, child_actor):
            return parent(child_actor)

    @kastor.remote(max_concurrency=4)
    class Threaded:
        def run(self, child_actor):
            return parent(child_actor)

    @kastor.remote
    class Async:
        async def run(self, child_actor):
            from kastor.util.state import list_tasks
            refs = [child_actor.child.remote(), child.remote()]
            for ref in refs:
                await ref
            me = kastor.get_runtime_context().get_task_id()
            listed = {r["task_id"] for r in list_tasks(filters=[("parent_task_id", "=", me)])}
            return {ref.task_id().hex() for ref in refs}, listed

    return ChildActor, (Plain, Threaded, Async)


@pytest.mark.parametrize("kind", ["actor", "threaded_actor", "async_actor"])
def test_a_methods_children_name_its_task_as_their_parent(embedded_cluster, kind):
    child_actor_class, kinds = _parent_of_children()
    actor = dict(zip(["actor", "threaded_actor", "async_actor"], kinds, strict=True))[kind].remote()
    expected, listed = kastor.get(actor.run.remote(child_actor_class.remote()), timeout=DEADLINE_S)
    assert len(expected) == 2 and listed == expected
