"""Records of clusters started with `kastor start` on this machine, for stop/status/auto."""

from __future__ import annotations

import glob
import json
import os

from kastor.runtime import config


def _dir() -> str:
    path = os.path.join(config.SESSION_ROOT, "records")
    os.makedirs(path, exist_ok=True)
    return path


def save(name: str, record: dict) -> str:
    path = os.path.join(_dir(), f"{name}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)
    return path


def all_records() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(glob.glob(os.path.join(_dir(), "*.json")), key=os.path.getmtime):
        try:
            with open(path) as f:
                out.append((path, json.load(f)))
        except (OSError, ValueError):
            continue
    return out


def latest() -> dict | None:
    heads = [r for _, r in all_records() if r.get("kind") == "head"]
    return heads[-1] if heads else None


def read_token(record: dict) -> str | None:
    path = record.get("token_file")
    if path and os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    return None


def write_token(session_dir: str, token: str) -> str:
    path = os.path.join(session_dir, "token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return path
