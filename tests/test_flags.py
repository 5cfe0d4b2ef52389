"""The flag sets declared once in runtime/flags.py: each entry point takes its defaults from the
same settings, and flags win over the environment. In-process: parsers only, nothing starts."""

from __future__ import annotations

import argparse

import pytest
from kastor.kubernetes import actor_pod
from kastor.runtime import flags, head, node_agent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("KASTOR_ADDRESS", "KASTOR_HEAD_PORT", "KASTOR_CLIENT_PORT", "KASTOR_DASHBOARD_PORT",
                 "KASTOR_NODE_IP", "KASTOR_NUM_CPUS", "KASTOR_NUM_GPUS", "KASTOR_REDIS_ADDRESS", "KASTOR_CLUSTER_ID"):
        monkeypatch.delenv(name, raising=False)


def test_head_defaults_and_environment(monkeypatch):
    args = head.build_parser().parse_args([])
    assert (args.port, args.client_port, args.dashboard_port, args.node_ip) == (6380, None, -1, "127.0.0.1")
    monkeypatch.setenv("KASTOR_HEAD_PORT", "7000")
    monkeypatch.setenv("KASTOR_CLIENT_PORT", "12000")
    monkeypatch.setenv("KASTOR_NODE_IP", "10.0.0.5")
    args = head.build_parser().parse_args([])
    assert (args.port, args.client_port, args.node_ip) == (7000, 12000, "10.0.0.5")
    assert head.build_parser().parse_args(["--client-port", "-1"]).client_port == -1  # the flag wins


def test_kastor_start_serves_the_client_port_by_default():
    p = argparse.ArgumentParser()
    flags.add_head_flags(p, client_port_by_default=True)
    assert p.parse_args([]).client_port == 10001


POD_ARGS = ["--class", "m:C", "--name", "n", "--namespace", "ns", "--resource", "r"]


def test_node_agent_and_actor_pod_need_an_address_unless_the_environment_has_one(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        node_agent.build_parser().parse_args([])
    assert "--address" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        actor_pod.build_parser().parse_args(POD_ARGS)
    assert "--address" in capsys.readouterr().err
    monkeypatch.setenv("KASTOR_ADDRESS", "head:6380")
    monkeypatch.setenv("KASTOR_NUM_CPUS", "3")
    args = node_agent.build_parser().parse_args([])
    assert (args.address, args.num_cpus, args.num_gpus, args.memory) == ("head:6380", 3.0, 0.0, 0.0)
    assert actor_pod.build_parser().parse_args(POD_ARGS).address == "head:6380"


def test_redis_clean_flags_are_required_unless_set(monkeypatch, capsys):
    p = argparse.ArgumentParser()
    flags.add_redis_flags(p, required=True)
    with pytest.raises(SystemExit):
        p.parse_args([])
    assert "--redis-address" in capsys.readouterr().err
    monkeypatch.setenv("KASTOR_REDIS_ADDRESS", "redis:6379")
    monkeypatch.setenv("KASTOR_CLUSTER_ID", "ns/c")
    p = argparse.ArgumentParser()
    flags.add_redis_flags(p, required=True)
    args = p.parse_args([])
    assert (args.redis_address, args.cluster_id) == ("redis:6379", "ns/c")
