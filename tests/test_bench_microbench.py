"""bench/microbench.py --only measures just the figures named (a smoke test; no timing is asserted).

A real run on tiny counts (--quick): an embedded cluster, the named figure measured, the others not.
"""

from __future__ import annotations

import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "microbench.py")


def test_only_measures_the_named_figures(tmp_path):
    proc = subprocess.run([sys.executable, BENCH, "--quick", "--no-ray", "--only", "actor_creations_per_s"],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = {line.split()[1]: line.split()[2] for line in proc.stdout.splitlines() if line.startswith("kastor ")}
    assert set(figures) == {"init_s", "actor_creations_per_s"}, proc.stdout
    assert figures["actor_creations_per_s"] != "nan", proc.stdout


def test_only_refuses_an_unknown_figure_and_names_the_known_ones(tmp_path):
    proc = subprocess.run([sys.executable, BENCH, "--no-ray", "--only", "actor_creation_per_s"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown figure(s) actor_creation_per_s" in proc.stderr and "actor_creations_per_s" in proc.stderr
