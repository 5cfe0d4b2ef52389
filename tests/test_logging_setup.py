"""The one logging setup of Kastor's processes: each line says when, how severe, which process, which logger."""

from __future__ import annotations

import re
import subprocess
import sys

SCRIPT = """
import logging
from kastor.runtime import logging_setup
logging_setup.configure({role!r}, verbose={verbose}, quiet=["chatty"])
logging.getLogger("kastor.head").info("serving")
logging.getLogger("kastor.head").debug("detail")
logging.getLogger("chatty").info("every call")
logging.getLogger("chatty").warning("trouble")
"""


def _run(role: str | None, verbose: bool) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(role=role, verbose=verbose)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stderr.splitlines()


def test_lines_name_the_process_and_quiet_loggers_warn_only():
    lines = _run("head", verbose=False)
    assert len(lines) == 2, lines
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO head kastor\.head: serving", lines[0]), lines
    assert lines[1].endswith("WARNING head chatty: trouble"), lines


def test_verbose_shows_debug_and_the_quiet_loggers_and_no_role_leaves_no_tag():
    lines = _run(None, verbose=True)
    assert [line.split(" ", 2)[2] for line in lines] == [
        "INFO kastor.head: serving", "DEBUG kastor.head: detail", "INFO chatty: every call", "WARNING chatty: trouble"]
