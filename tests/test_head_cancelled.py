"""Head handlers whose caller goes away mid-way still finish what they began.

grpc.aio cancels a handler when its caller goes away (a deadline passed, a node agent whose pod
was deleted exited). A handler cancelled between two state changes left the first without the
second, where nothing looks again: an actor RESTARTING or PENDING for ever, a finished job whose
actors live on, a killed actor or a removed placement group whose workers keep running. Here the
caller's deadline passes while the head writes to its Redis (SIGSTOPped), which cancels the
handler at its first save, as a real caller going away would. Real head, Redis, node agents and
workers; docs/fault-tolerance.md lists every handler and why the others are safe.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import kastor
import pytest
from gcs_cluster import TOKEN, GcsCluster, driven_cluster
from kastor.actor import actor_id_of
from kastor.runtime import auth
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.util import placement_group
from kastor.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from redis_server import RedisServer
from support import DEADLINE_S, process_gone, wait_until

# The caller's deadline: long enough for a loaded head to begin the handler, which then waits on
# the stopped Redis until the deadline cancels it.
CUT_OFF_S = 4.0


@kastor.remote
class Probe:
    """An actor the tests know by its worker's pid: a new incarnation is a new process."""

    def pid(self) -> int:
        return os.getpid()


@dataclass
class HeadLine:
    """A Redis-backed cluster (node n1, this process its driver) and a raw line to its head's API,
    for the calls a node agent or a driver makes."""

    cluster: GcsCluster
    redis: RedisServer
    stub: pb_grpc.HeadStub
    metadata: tuple

    def actor(self, actor_id: bytes) -> pb.ActorInfo:
        return self.stub.GetActor(pb.GetActorRequest(actor_id=actor_id), metadata=self.metadata, timeout=10).info

    @contextlib.contextmanager
    def redis_stopped(self) -> Iterator[None]:
        """The head's Redis SIGSTOPped (every save hangs) for the block, whatever happens in it."""
        os.kill(self.redis.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.redis.proc.pid, signal.SIGCONT)

    def cut_off(self, method: Callable, request) -> None:
        """Calls `method` (a HeadStub method) with a deadline that passes while the head's Redis is
        stopped: the head's handler is cancelled at its first save, as if its caller went away."""
        with self.redis_stopped(), pytest.raises(grpc.RpcError) as gone:
            method(request, metadata=self.metadata, timeout=CUT_OFF_S)
        assert gone.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


@contextlib.contextmanager
def head_line(tmp_path, redis_server, monkeypatch, **env: str) -> Iterator[HeadLine]:
    with driven_cluster(tmp_path, redis_server, monkeypatch, env=env) as c, \
            contextlib.closing(grpc.insecure_channel(c.address)) as channel:
        yield HeadLine(c, redis_server, pb_grpc.HeadStub(channel), auth.metadata(TOKEN))


@pytest.fixture
def line(tmp_path, redis_server, monkeypatch) -> Iterator[HeadLine]:
    with head_line(tmp_path, redis_server, monkeypatch) as line:
        yield line


def test_an_actor_whose_death_reporter_goes_away_mid_report_is_still_restarted(line):
    """A node agent whose pod is deleted reports its actor's worker dead and exits before the
    reply. The head's handler was cancelled after marking the actor RESTARTING and before placing
    it: nothing ever placed it (a DetachedActor stayed RESTARTING for ever on its replacement pod)."""
    a = Probe.options(name="reported", lifetime="detached", max_restarts=-1).remote()
    old_pid = kastor.get(a.pid.remote(), timeout=DEADLINE_S)
    actor_id = actor_id_of(a)
    line.cut_off(line.stub.ReportWorkerDeath, pb.WorkerDeath(
        node_id="n1", worker_id=line.actor(actor_id).worker_id, actor_id=actor_id, cause="its node agent went away"))
    wait_until(lambda: (now := line.actor(actor_id)).state == pb.ALIVE and now.num_restarts == 1,
               "the actor restarted (ALIVE again, 1 restart), not RESTARTING for ever")
    assert kastor.get(a.pid.remote(), timeout=DEADLINE_S) != old_pid, "calls reach the new incarnation"


def test_an_actor_whose_creator_goes_away_mid_create_is_still_placed(line):
    """A creator whose deadline passes while the head saves the new actor cancelled the handler
    between the save and the placement, and a retry of the create answered `existed` without
    placing it: the actor stayed PENDING for ever."""
    model = Probe.options(name="model", lifetime="detached").remote()
    kastor.get(model.pid.remote(), timeout=DEADLINE_S)
    spec = pb.ActorSpec()
    spec.CopyFrom(line.actor(actor_id_of(model)).spec)
    spec.actor_id, spec.name = os.urandom(len(spec.actor_id)), "late"
    line.cut_off(line.stub.CreateActor, pb.CreateActorRequest(spec=spec))
    wait_until(lambda: line.actor(spec.actor_id).state == pb.ALIVE, "the actor placed and ALIVE, not PENDING for ever")


def test_an_actor_killed_by_a_caller_that_goes_away_mid_kill_has_its_worker_stopped(line):
    """kill(no_restart=True) marked the actor DEAD, then was cancelled at the save, before asking
    its node to stop the worker; a retry found the actor DEAD and did nothing. The worker ran on
    for ever, holding its resources."""
    a = Probe.options(max_restarts=-1).remote()
    pid = kastor.get(a.pid.remote(), timeout=DEADLINE_S)
    actor_id = actor_id_of(a)
    line.cut_off(line.stub.KillActor, pb.KillActorRequest(actor_id=actor_id, no_restart=True))
    wait_until(lambda: process_gone(pid), "the killed actor's worker to exit")
    assert line.actor(actor_id).state == pb.DEAD


def test_a_job_finished_by_a_driver_that_goes_away_mid_finish_loses_its_actors(line):
    """FinishJob dropped the job from the table, then was cancelled at the save, before killing
    the job's actors; neither a retry nor the driver's closed session found the job any more, so
    its non-detached actors lived on for ever."""
    a = Probe.remote()
    pid = kastor.get(a.pid.remote(), timeout=DEADLINE_S)
    [job] = [j for j in line.stub.ListJobs(pb.ListRequest(), metadata=line.metadata, timeout=10).jobs
             if j.pid == os.getpid()]
    line.cut_off(line.stub.FinishJob, pb.FinishJobRequest(job_id=job.job_id))
    wait_until(lambda: line.actor(actor_id_of(a)).state == pb.DEAD, "the finished job's actor to be DEAD")
    wait_until(lambda: process_gone(pid), "the finished job's actor's worker to exit")


def test_a_placement_group_removed_by_a_caller_that_goes_away_mid_remove_loses_its_actors(line):
    """RemovePlacementGroup marked the group REMOVED, then was cancelled at the save, before
    killing the actors in it; a retry found it REMOVED and did nothing. The node's next heartbeat
    had it give the group's bundles back, which stopped the worker, but as a worker death: the
    actor (restartable) went RESTARTING for ever, waiting for a group that is gone, not DEAD."""
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(DEADLINE_S)
    a = Probe.options(num_cpus=1, max_restarts=-1, scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote()
    pid = kastor.get(a.pid.remote(), timeout=DEADLINE_S)
    line.cut_off(line.stub.RemovePlacementGroup, pb.PlacementGroupRequest(placement_group_id=pg.id.binary()))
    wait_until(lambda: line.actor(actor_id_of(a)).state == pb.DEAD, "the removed group's actor to be DEAD")
    wait_until(lambda: process_gone(pid), "the removed group's actor's worker to exit")


def test_a_heartbeat_cut_off_mid_reconcile_still_restarts_the_lost_actor_and_stops_the_stale_worker(
        tmp_path, redis_server, monkeypatch):
    """The first heartbeat of a rejoined node (or of every node after a head restart) compares
    its live actors with the table. An actor the table has there but the node no longer runs is
    restarted; a worker the table does not place there is stopped (the reply names it). Cut off
    mid-way, the actor was left RESTARTING for ever, and the node was never compared again.

    Here the test speaks for node n1 (its agent SIGSTOPped meanwhile): it registers again, then
    heartbeats without the actor it runs, as if its worker had died while the head was away. The
    node death timeout is long enough that n1, stopped for the cut-off, is not declared dead."""
    with head_line(tmp_path, redis_server, monkeypatch, KASTOR_NODE_DEATH_TIMEOUT_S="15") as line:
        _first_heartbeat_without_the_actor(line, lambda beat: line.cut_off(line.stub.Heartbeat, beat))


def test_a_stale_worker_a_node_reports_after_its_comparison_is_still_stopped(tmp_path, redis_server, monkeypatch):
    """The comparison can finish and its reply still go nowhere: the caller's deadline passes
    first and the head's own one later (it counts from when the head read the request), so the
    handler is not cancelled and the node is not compared again. A restart decided there (the
    node's heartbeat said the worker was gone) left the old incarnation running for good when the
    node reported it afterwards (this failed CI once). Every heartbeat now stops a worker of an
    incarnation the table has moved past. Here the comparing heartbeat is answered in full; the
    node's real heartbeats that follow still list the old worker."""
    with head_line(tmp_path, redis_server, monkeypatch, KASTOR_NODE_DEATH_TIMEOUT_S="15") as line:
        _first_heartbeat_without_the_actor(
            line, lambda beat: line.stub.Heartbeat(beat, metadata=line.metadata, timeout=DEADLINE_S))


def _first_heartbeat_without_the_actor(line: HeadLine, send: Callable[[pb.HeartbeatRequest], object]) -> None:
    """n1 registers again and its first heartbeat (sent by `send`) lists no actor, although its
    agent (stopped meanwhile, so that its own heartbeat does not compare first) still runs one."""
    a = Probe.options(name="lost", lifetime="detached", max_restarts=-1).remote()
    old_pid = kastor.get(a.pid.remote(), timeout=DEADLINE_S)
    actor_id = actor_id_of(a)
    [n1] = line.stub.ListNodes(pb.ListRequest(), metadata=line.metadata, timeout=10).nodes
    agent = line.cluster.nodes["n1"].proc.pid
    os.kill(agent, signal.SIGSTOP)
    try:
        line.stub.RegisterNode(n1, metadata=line.metadata, timeout=10)
        send(pb.HeartbeatRequest(node_id="n1", available=n1.available))
    finally:
        os.kill(agent, signal.SIGCONT)
    wait_until(lambda: (now := line.actor(actor_id)).state == pb.ALIVE and now.num_restarts == 1,
               "the actor restarted (ALIVE again, 1 restart), not RESTARTING for ever")
    assert kastor.get(a.pid.remote(), timeout=DEADLINE_S) != old_pid, "calls reach the new incarnation"
    wait_until(lambda: process_gone(old_pid), "the stale incarnation's worker stopped (the node reports it)")


def test_a_job_whose_driver_never_opens_its_session_is_finished(tmp_path, redis_server, monkeypatch):
    """A RegisterJob whose reply reached nobody (its caller's deadline passed, or the driver died
    before opening the job's session) left a job that no driver holds, in list_jobs() and in the
    head's Redis until the head restarted. It is finished after JOB_SESSION_OPEN_TIMEOUT_S; a driver
    that holds its session keeps its job."""
    with head_line(tmp_path, redis_server, monkeypatch, KASTOR_JOB_SESSION_OPEN_TIMEOUT_S="2") as line:
        def jobs_by_pid() -> dict[int, bytes]:
            return {j.pid: j.job_id for j in line.stub.ListJobs(pb.ListRequest(), metadata=line.metadata,
                                                                 timeout=10).jobs}

        orphan_pid = 2 ** 22 + 1  # above any pid on the machine: no driver has it
        line.stub.RegisterJob(pb.RegisterJobRequest(namespace="orphan", pid=orphan_pid),
                              metadata=line.metadata, timeout=10)
        assert orphan_pid in jobs_by_pid()
        wait_until(lambda: orphan_pid not in jobs_by_pid(), "the job nobody opened a session for to be finished")
        assert os.getpid() in jobs_by_pid(), "the job of a driver that holds its session was finished too"
        assert kastor.get(Probe.remote().pid.remote(), timeout=DEADLINE_S) > 0
