"""The settings table: every KASTOR_* variable declared once, parsed at call time, with clear errors.

Fast, in-process tests of the table, plus real processes for what a bad or drifted value did to
the entry points (`kastor start`, a bare head)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kastor.runtime import launcher, settings
from kastor.runtime.settings import SettingError, all_settings

SOURCE_DIRS = ("client", "runtime", "operator")
ROOT = Path(__file__).resolve().parent.parent
# KASTOR_ words in the source that are not environment variables.
NOT_VARIABLES = {"KASTOR_READY"}  # the line a child prints on stdout when it serves (launcher.announce_ready)


def test_every_kastor_variable_in_the_source_is_declared():
    """A new KASTOR_* read anywhere fails here until it is declared in settings.py (and so documented)."""
    declared = {s.name for s in all_settings()}
    found: dict[str, str] = {}
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            for name in re.findall(r"KASTOR_[A-Z0-9_]*[A-Z0-9]", path.read_text()):
                found.setdefault(name, str(path.relative_to(ROOT)))
    assert found, "the scan found no KASTOR_ names at all: it is looking in the wrong place"
    missing = {name: where for name, where in found.items() if name not in declared | NOT_VARIABLES}
    assert not missing, f"undeclared KASTOR_* variables (declare them in runtime/settings.py): {missing}"


def test_all_settings_is_sorted_and_described():
    table = all_settings()
    assert [s.name for s in table] == sorted(s.name for s in table)
    assert len({s.name for s in table}) == len(table)
    for s in table:
        assert s.name.startswith("KASTOR_")
        assert s.type_name in {"int", "float", "bool", "str", "path"}
        assert s.description.strip(), s.name
        assert isinstance(s.internal, bool)
        if s.default is not None and s.type_name in {"int", "float", "bool"}:
            assert type(s.default).__name__ == s.type_name, s.name
    internal = {s.name for s in table if s.internal}
    assert "KASTOR_WORKER_ID" in internal and "KASTOR_NODE_DEATH_TIMEOUT_S" not in internal


def test_defaults_when_unset_or_empty(monkeypatch):
    monkeypatch.delenv("KASTOR_NODE_DEATH_TIMEOUT_S", raising=False)
    monkeypatch.delenv("KASTOR_IDLE_WORKERS_KEPT", raising=False)
    assert settings.NODE_DEATH_TIMEOUT_S.get() == 10.0
    assert settings.IDLE_WORKERS_KEPT.get() is None
    monkeypatch.setenv("KASTOR_NODE_DEATH_TIMEOUT_S", "")  # KASTOR_X= in a pod spec: no value
    assert settings.NODE_DEATH_TIMEOUT_S.get() == 10.0
    assert not settings.NODE_DEATH_TIMEOUT_S.is_set()


def test_values_are_read_when_asked_for(monkeypatch):
    monkeypatch.setenv("KASTOR_NODE_DEATH_TIMEOUT_S", "2.5")
    assert settings.NODE_DEATH_TIMEOUT_S.get() == 2.5
    monkeypatch.setenv("KASTOR_NODE_DEATH_TIMEOUT_S", " 4 ")
    assert settings.NODE_DEATH_TIMEOUT_S.get() == 4.0
    monkeypatch.setenv("KASTOR_SESSIONS_KEPT", "7")
    assert settings.get("KASTOR_SESSIONS_KEPT") == 7


@pytest.mark.parametrize("raw, expected", [("0", False), ("false", False), ("OFF", False), ("no", False),
                                           ("1", True), ("true", True), ("On", True), ("yes", True)])
def test_bool_values(monkeypatch, raw, expected):
    monkeypatch.setenv("KASTOR_UVLOOP", raw)
    assert settings.UVLOOP.get() is expected


@pytest.mark.parametrize("name, raw, expected", [
    ("KASTOR_NODE_DEATH_TIMEOUT_S", "abc", "a number"),
    ("KASTOR_SESSIONS_KEPT", "2.5", "a whole number"),
    ("KASTOR_UVLOOP", "maybe", "true/false"),
])
def test_a_bad_value_names_the_variable_the_value_and_what_is_expected(monkeypatch, name, raw, expected):
    monkeypatch.setenv(name, raw)
    with pytest.raises(SettingError) as info:
        settings.get(name)
    message = str(info.value)
    assert name in message and repr(raw) in message and expected in message, message


def test_a_derived_default_follows_its_source(monkeypatch):
    monkeypatch.delenv("KASTOR_JOB_RECONNECT_GRACE_S", raising=False)
    monkeypatch.setenv("KASTOR_HEAD_RECONNECT_TIMEOUT_S", "20")
    assert settings.JOB_RECONNECT_GRACE_S.get() == 30.0
    monkeypatch.delenv("KASTOR_HEAD_RECONNECT_TIMEOUT_S")
    assert settings.JOB_RECONNECT_GRACE_S.get() == settings.JOB_RECONNECT_GRACE_S.default == 70.0
    monkeypatch.setenv("KASTOR_JOB_RECONNECT_GRACE_S", "5")
    assert settings.JOB_RECONNECT_GRACE_S.get() == 5.0


def test_a_missing_internal_variable_says_who_sets_it(monkeypatch):
    monkeypatch.delenv("KASTOR_WORKER_ID", raising=False)
    with pytest.raises(SettingError, match="KASTOR_WORKER_ID is not set.*node agent"):
        settings.WORKER_ID.require()


def test_an_unknown_name_is_refused():
    with pytest.raises(KeyError, match="KASTOR_NO_SUCH is not a declared Kastor setting"):
        settings.get("KASTOR_NO_SUCH")


def _clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KASTOR_")}
    return {**env, "KASTOR_SESSION_ROOT": str(tmp / "sessions"), **extra}


def test_kastor_start_with_a_bad_value_says_which_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "start", "--head"],
                            env=_clean_env(tmp_path, KASTOR_HEAD_PORT="six"), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert "KASTOR_HEAD_PORT='six' is not valid: expected a whole number" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_kastor_start_client_port_flag_wins_over_the_variable(tmp_path):
    """`--client-port -1` switches the client port off even with KASTOR_CLIENT_PORT set: the head
    used to pick the variable up from the environment it inherited and serve it anyway."""
    port = launcher.free_port()
    env = _clean_env(tmp_path, KASTOR_TOKEN="t-" + os.urandom(8).hex(), KASTOR_CLIENT_PORT=str(launcher.free_port()))
    cli = [sys.executable, "-m", "kastor.runtime.cli"]
    out = subprocess.run([*cli, "start", "--head", "--no-node", "--port", str(port), "--client-port", "-1"],
                         env=env, capture_output=True, text=True, timeout=120)
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        assert "started" in out.stdout and "notebooks:" not in out.stdout, out.stdout
    finally:
        subprocess.run([*cli, "stop", "--address", f"127.0.0.1:{port}"], env=env, capture_output=True, timeout=120)


def test_a_bare_head_treats_client_port_minus_one_as_none(tmp_path):
    """`kastor start --head` always read KASTOR_CLIENT_PORT=-1 as "no client port"; a bare head
    (python -m kastor.runtime.head) served one anyway (gRPC bound "port -1" as 65535)."""
    head = launcher.Child("kastor.runtime.head", ["--port", str(launcher.free_port())],
                          _clean_env(tmp_path, KASTOR_TOKEN="t-" + os.urandom(8).hex(), KASTOR_CLIENT_PORT="-1"),
                          str(tmp_path / "head.log"))
    try:
        head.wait_ready()
        assert "client" not in head.ready_info
    finally:
        head.stop()
