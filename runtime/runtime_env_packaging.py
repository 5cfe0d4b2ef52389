"""Packing a driver's local code for a runtime_env: `working_dir` and `py_modules`, as Ray 2.x does.

A directory is zipped with its files in a fixed order and fixed timestamps, so the same
content always gives the same bytes; its URI is the hash of that content
(`kastor-pkg://<sha1>.zip`). The driver uploads it to the head once (the head is asked first
whether it has it), and every node agent downloads it once into a cache keyed by that URI.

What is left out, as in Ray: `.git`, whatever the `excludes` patterns name (gitignore-style,
relative to the directory), and whatever `.gitignore` / `.rayignore` files in the tree name
(set KASTOR_RUNTIME_ENV_IGNORE_GITIGNORE=1 to include those files anyway). A package larger
than KASTOR_RUNTIME_ENV_MAX_PACKAGE_BYTES (100 MiB by default, Ray's limit) is refused with
an error that names the biggest files, the usual cause being data or a virtualenv in the
directory.

A `working_dir` zip holds the directory's contents (the worker's cwd is its root). A
`py_modules` directory keeps its own name inside the zip, so `import <name>` works with the
unpacked root on sys.path; a single `.py` file likewise; a `.whl` is uploaded as it is.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kastor.runtime import settings

URI_SCHEME = "kastor-pkg://"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_IGNORE_FILES = (".gitignore", ".rayignore")


def max_package_bytes() -> int:
    """The size limit of one package (KASTOR_RUNTIME_ENV_MAX_PACKAGE_BYTES, default Ray's 100 MiB)."""
    return settings.RUNTIME_ENV_MAX_PACKAGE_BYTES.get()


def is_package_uri(value: str) -> bool:
    return value.startswith(URI_SCHEME)


@dataclass(frozen=True)
class Package:
    """One packed directory or file: its URI (by content hash) and its bytes."""
    uri: str
    data: bytes


class _Pattern:
    """One gitignore-style line, relative to the directory that holds it."""

    def __init__(self, base: str, line: str):
        self.base = base  # relative to the package root, "" for the root
        self.dir_only = line.endswith("/")
        line = line.rstrip("/")
        self.anchored = "/" in line
        self.glob = line.lstrip("/")

    def matches(self, rel: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        if self.base:
            if not rel.startswith(self.base + "/"):
                return False
            rel = rel[len(self.base) + 1:]
        if self.anchored:
            return fnmatch.fnmatchcase(rel, self.glob) or (
                self.glob.startswith("**/") and fnmatch.fnmatchcase(rel, self.glob[3:]))
        return fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], self.glob)


def _patterns(base: str, lines: list[str]) -> list[_Pattern]:
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and not line.startswith("!"):
            out.append(_Pattern(base, line))
    return out


def _read_ignore_files(directory: str, rel_dir: str) -> list[_Pattern]:
    if settings.RUNTIME_ENV_IGNORE_GITIGNORE.get():
        return []
    out: list[_Pattern] = []
    for name in _IGNORE_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                out += _patterns(rel_dir, f.read().splitlines())
    return out


def walk(root: str, excludes: list[str]) -> Iterator[tuple[str, str]]:
    """(relative path, absolute path) of every file under `root` a package includes, sorted."""
    rules = _patterns("", excludes)
    seen: set[str] = set()  # real paths of the directories walked: a symlink loop is walked once

    def visit(directory: str, rel_dir: str, inherited: list[_Pattern]) -> Iterator[tuple[str, str]]:
        real = os.path.realpath(directory)
        if real in seen:
            return
        seen.add(real)
        local = inherited + _read_ignore_files(directory, rel_dir)
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            is_dir = entry.is_dir(follow_symlinks=True)
            if entry.name == ".git" or any(p.matches(rel, is_dir) for p in local):
                continue
            if is_dir:
                yield from visit(entry.path, rel, local)
            elif entry.is_file(follow_symlinks=True):
                yield rel, entry.path

    yield from visit(root, "", rules)


def signature(path: str, excludes: list[str]) -> tuple:
    """(name, size, mtime) of each file a package of `path` would hold: changes when they are edited."""
    if os.path.isfile(path):
        st = os.stat(path)
        return ((path, st.st_size, st.st_mtime_ns),)
    out = []
    for rel, full in walk(path, excludes):
        st = os.stat(full)
        out.append((rel, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _zip(files: list[tuple[str, str]], what: str, limit: int) -> bytes:
    sizes = [(os.path.getsize(path), rel) for rel, path in files]
    total = sum(size for size, _ in sizes)
    if total > limit:
        biggest = ", ".join(f"{rel} ({size / 2**20:.1f} MiB)" for size, rel in sorted(sizes, reverse=True)[:3])
        raise ValueError(
            f"The runtime_env {what} is {total / 2**20:.1f} MiB, over the {limit / 2**20:.0f} MiB limit "
            f"(KASTOR_RUNTIME_ENV_MAX_PACKAGE_BYTES). Its largest files: {biggest}. Leave data and virtualenvs "
            f"out with runtime_env['excludes'] (gitignore-style patterns) or a .gitignore, or raise the limit.")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for rel, path in files:
            info = zipfile.ZipInfo(rel, _ZIP_TIME)
            mode = os.stat(path).st_mode
            info.external_attr = (stat.S_IFREG | (0o755 if mode & stat.S_IXUSR else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                z.writestr(info, f.read())
    return buf.getvalue()


def _content_uri(files: list[tuple[str, str]], suffix: str = ".zip") -> str:
    h = hashlib.sha1()
    for rel, path in files:
        h.update(rel.encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.sha1(f.read()).digest())
    return f"{URI_SCHEME}{h.hexdigest()}{suffix}"


def pack_working_dir(path: str, excludes: list[str]) -> Package:
    """The contents of directory `path` (or a local .zip of them), keyed by their hash."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(path) and path.endswith(".zip"):
        return _pack_file_as_is(path, ".zip")
    if not os.path.isdir(path):
        raise ValueError(f"runtime_env['working_dir'] {path!r} is not a directory (or a local .zip file). "
                         f"Give the path of a local directory; remote URIs are not supported by Kastor.")
    files = list(walk(path, excludes))
    return Package(_content_uri(files), _zip(files, f"working_dir {path!r}", max_package_bytes()))


def pack_py_module(path: str, excludes: list[str]) -> Package:
    """A package directory (under its own name), a single .py file, or a .whl as it is."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(path) and path.endswith(".whl"):
        return _pack_file_as_is(path, ".whl")
    if os.path.isfile(path) and path.endswith(".py"):
        files = [(os.path.basename(path), path)]
    elif os.path.isdir(path):
        name = os.path.basename(path.rstrip("/"))
        files = [(f"{name}/{rel}", full) for rel, full in walk(path, excludes)]
    else:
        raise ValueError(f"runtime_env['py_modules'] entry {path!r} is not a directory, .py file or .whl file "
                         f"here. Give local paths (or imported modules); remote URIs are not supported by Kastor.")
    return Package(_content_uri(files), _zip(files, f"py_modules entry {path!r}", max_package_bytes()))


def _pack_file_as_is(path: str, suffix: str) -> Package:
    limit = max_package_bytes()
    size = os.path.getsize(path)
    if size > limit:
        raise ValueError(f"The runtime_env package {path!r} is {size / 2**20:.1f} MiB, over the "
                         f"{limit / 2**20:.0f} MiB limit (KASTOR_RUNTIME_ENV_MAX_PACKAGE_BYTES).")
    with open(path, "rb") as f:
        data = f.read()
    name = os.path.basename(path) if suffix == ".whl" else ""
    # A wheel keeps its file name (pip and importers read it); the hash still makes it unique.
    digest = hashlib.sha1(data).hexdigest()
    return Package(f"{URI_SCHEME}{digest}/{name}" if name else f"{URI_SCHEME}{digest}{suffix}", data)


def upload(package: Package, has: Callable[[str], bool], put: Callable[[Package], None]) -> str:
    """Uploads `package` unless the head already has it; returns its URI."""
    if not has(package.uri):
        put(package)
    return package.uri
