"""Hostile and broken input against every kind of port: each gets a clear error, nothing sent
without the token is ever unpickled, and the cluster keeps serving everyone else.
"""

from __future__ import annotations

import os
import pickle
import socket

import grpc
import kastor
import pytest
from kastor.exceptions import KastorSystemError, TaskError
from kastor.runtime import auth, config
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.serialization import SerializationError
from kastor.util.state import list_nodes
from support import DEADLINE_S

pytestmark = pytest.mark.usefixtures("embedded_cluster")


@kastor.remote
class Echo:
    def echo(self, x):
        return x

    def address(self) -> str:
        from kastor.runtime import context
        return context.core.address

    def token(self) -> str:
        from kastor.runtime import context
        return context.core.token


_keep: list = []  # actors whose worker ports the tests aim at (an unreferenced actor is collected)


def ports(cluster) -> dict[str, tuple[str, str]]:
    """service name -> (address, a method of it), for the head, a node agent and a worker."""
    _keep.append(Echo.remote())
    worker = kastor.get(_keep[-1].address.remote())
    return {"Head": (cluster.address_info["gcs_address"], "ListNodes"),
            "NodeAgent": (list_nodes()[0]["address"], "FreeObjects"),
            "CoreWorker": (worker, "GetObjects")}


def raw_call(address: str, service: str, method: str, payload: bytes, metadata=()) -> grpc.RpcError | bytes:
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)]) as ch:
        call = ch.unary_unary(f"/kastor.{service}/{method}", request_serializer=None, response_deserializer=None)
        try:
            return call(payload, metadata=metadata, timeout=30)
        except grpc.RpcError as e:
            return e


def still_serving() -> None:
    e = Echo.remote()
    assert kastor.get(e.echo.remote("alive"), timeout=DEADLINE_S) == "alive"


class PickleBomb:
    """Unpickling this creates a file: proof of whether anyone unpickled it."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_garbage_bytes_on_every_port(embedded_cluster):
    for address, _ in ports(embedded_cluster).values():
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(os.urandom(4096))
            s.settimeout(10)
            try:
                while s.recv(4096):
                    pass  # the server answers with an HTTP/2 GOAWAY and closes
            except (ConnectionResetError, TimeoutError):
                pass
    still_serving()


def test_no_token_means_nothing_is_unpickled(embedded_cluster, tmp_path):
    marker = tmp_path / "unpickled"
    bomb = pickle.dumps(PickleBomb(str(marker)))
    spec = pb.TaskSpec(task_id=os.urandom(16), args=pb.Value(data=b"\x00" + bomb))
    request = pb.ExecuteRequest(tasks=[spec]).SerializeToString()
    for service, (address, method) in ports(embedded_cluster).items():
        for metadata in ((), auth.metadata("wrong-token"), (("kastor-token", ""),)):
            error = raw_call(address, service, method, request, metadata)
            assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.UNAUTHENTICATED, service
        with grpc.insecure_channel(address) as ch:
            stream = ch.stream_stream("/kastor.CoreWorker/Execute", request_serializer=None,
                                      response_deserializer=None)
            with pytest.raises(grpc.RpcError) as info:
                list(stream(iter([request]), timeout=10))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not marker.exists(), "a peer without the token got a pickle loaded"
    still_serving()


def test_a_token_for_another_cluster_is_refused(embedded_cluster):
    """A token captured elsewhere (replayed) opens nothing here; a duplicate header doesn't help."""
    address, method = ports(embedded_cluster)["Head"]
    other = auth.metadata(auth.generate_token())
    assert raw_call(address, "Head", method, b"", other).code() == grpc.StatusCode.UNAUTHENTICATED
    real = kastor.get(Echo.remote().token.remote())
    doubled = (*other, *auth.metadata(real))
    assert raw_call(address, "Head", method, b"", doubled).code() == grpc.StatusCode.UNAUTHENTICATED


def test_truncated_messages_are_rejected_cleanly(embedded_cluster):
    token = kastor.get(Echo.remote().token.remote())
    whole = pb.ListRequest().SerializeToString() + pb.FreeObjectsRequest(paths=["x" * 50]).SerializeToString()
    for service, (address, method) in ports(embedded_cluster).items():
        error = raw_call(address, service, method, whole[:7] + b"\x0a\xff\xff\xff", auth.metadata(token))
        assert isinstance(error, grpc.RpcError), service
        assert "Error parsing message" in error.details(), (service, error)
    still_serving()


def test_oversized_message_is_refused_before_it_is_read(embedded_cluster):
    token = kastor.get(Echo.remote().token.remote())
    address, method = ports(embedded_cluster)["Head"]
    error = raw_call(address, "Head", method, b"\x00" * (config.MAX_MESSAGE_BYTES + 1), auth.metadata(token))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    still_serving()


def test_huge_argument_lists():
    @kastor.remote
    def count(*args, **kwargs):
        return len(args) + len(kwargs)

    kwargs = {f"k{i}": i for i in range(20_000)}
    assert kastor.get(count.remote(*range(100_000), **kwargs), timeout=DEADLINE_S) == 120_000


def test_deeply_nested_argument_is_a_clear_error_at_the_call_site():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    e = Echo.remote()
    with pytest.raises(SerializationError, match="argument"):
        e.echo.remote(deep)
    still_serving()


class Cursed:
    """Pickles fine in the worker; fails to unpickle where it is read."""

    def __reduce__(self):
        return (_explode, ())


def _explode():
    raise RuntimeError("this value cannot be rebuilt here")


def test_result_that_fails_to_unpickle_is_a_clear_error():
    @kastor.remote
    def cursed():
        return Cursed()

    with pytest.raises((KastorSystemError, TaskError)) as info:
        kastor.get(cursed.remote(), timeout=DEADLINE_S)
    assert "cannot be rebuilt" in str(info.value)
    assert "unpickl" in str(info.value) or "deserializ" in str(info.value)
    still_serving()
