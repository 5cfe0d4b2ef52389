"""bench/curves.py runs to completion on tiny sizes (a smoke test; no timing is asserted).

A real run: its own head and node agents (a second one for the node curve), caller threads and
caller processes joined as drivers, named actors in the head. What is checked is that every
curve produced its points and the report was written, not how fast anything was.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "curves.py")
CURVES = ["callers_threads", "callers_procs", "actors", "nodes", "named"]


def test_curves_quick_runs_every_curve_and_writes_the_report(tmp_path):
    proc = subprocess.run([sys.executable, BENCH, "--quick", "--no-ray", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = [p for p in os.listdir(tmp_path) if p.startswith("results-curves-") and p.endswith("-quick.md")]
    assert len(reports) == 1, os.listdir(tmp_path)
    text = (tmp_path / reports[0]).read_text()
    assert "failed" not in text, text
    for curve in CURVES:
        assert f"### {curve} " in text, f"no table for {curve}:\n{text}"
    assert "load average" in text
    # every curve printed a point for each of its x values (quick sizes: see Sizes.from_args)
    points = [line for line in proc.stdout.splitlines() if line.startswith("CURVE ")]
    assert len(points) == 2 + 2 + 2 + 2 + 4, "\n".join(points)
    png = tmp_path / reports[0].replace(".md", ".png")
    if importlib.util.find_spec("matplotlib") is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib is missing" in proc.stdout
