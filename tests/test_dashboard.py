"""The head's HTTP port: Prometheus metrics and the live tables, behind the cluster token."""

from __future__ import annotations

import os
import socket

import kastor
import pytest
import requests
from kastor.runtime import launcher
from support import DEADLINE_S, cli_head, wait_until

TOKEN = "dashboard-test-" + os.urandom(8).hex()


@kastor.remote
class Named:
    def ping(self) -> str:
        return "pong"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    http_port = launcher.free_port()
    with cli_head(tmp_path_factory.mktemp("sessions"), TOKEN, "--client-port", "-1",
                  "--dashboard-port", str(http_port)) as head:
        kastor.init(head["head"], token=TOKEN)
        yield f"http://127.0.0.1:{http_port}"
        kastor.shutdown()


def fetch(url: str, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(url, headers=headers, timeout=DEADLINE_S)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics:\n{text}")


@pytest.mark.parametrize("path", ["/metrics", "/api/actors", "/api/nodes", "/api/placement_groups", "/-/healthy"])
def test_every_path_wants_the_token(cluster, path):
    for token in (None, "wrong-token", TOKEN[:-1]):
        reply = fetch(cluster + path, token)
        assert reply.status_code == 401, (path, token, reply.status_code)
        assert "token" in reply.text
    assert fetch(cluster + path).status_code == 200


def test_metrics_follow_the_actor_table(cluster):
    text = fetch(cluster + "/metrics").text
    assert metric(text, 'kastor_nodes{state="alive"}') == 1
    before = metric(text, 'kastor_actors{state="ALIVE"}')
    actor = Named.options(name="on-the-dashboard").remote()
    assert kastor.get(actor.ping.remote(), timeout=DEADLINE_S) == "pong"
    after = fetch(cluster + "/metrics").text
    assert metric(after, 'kastor_actors{state="ALIVE"}') == before + 1
    assert metric(after, "kastor_jobs") >= 1 and metric(after, "kastor_named_actors") >= 1
    rows = {row["name"]: row for row in fetch(cluster + "/api/actors").json()}
    assert rows["on-the-dashboard"]["state"] == "ALIVE" and rows["on-the-dashboard"]["class"] == "Named"
    kastor.kill(actor)
    wait_until(lambda: metric(fetch(cluster + "/metrics").text, 'kastor_actors{state="ALIVE"}') == before,
               "the killed actor to leave the ALIVE gauge")
    assert [n["alive"] for n in fetch(cluster + "/api/nodes").json()] == [True]


def test_placement_groups_are_listed(cluster):
    from kastor.util import placement_group, remove_placement_group

    pg = placement_group([{"CPU": 1}], name="on-the-dashboard")
    assert pg.wait(DEADLINE_S)
    rows = {row["placement_group_id"]: row for row in fetch(cluster + "/api/placement_groups").json()}
    assert rows[pg.id.hex()]["state"] == "CREATED" and rows[pg.id.hex()]["name"] == "on-the-dashboard"
    remove_placement_group(pg)


def test_garbage_bytes_do_not_stop_it(cluster):
    host, port = cluster.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=DEADLINE_S) as s:
        s.sendall(os.urandom(4096) + b"\r\n\r\n")
        s.recv(4096)  # a 400, or the connection closed
    with socket.create_connection((host, int(port)), timeout=DEADLINE_S) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"A" * 100_000 + b"\r\n\r\n")
        status = s.recv(4096)[9:12]
        assert status in (b"400", b"401", b"431", b""), status  # refused, never served
    assert fetch(cluster + "/metrics").status_code == 200
