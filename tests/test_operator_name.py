"""`operator/` is Kastor's operator package, only ever importable as `kastor.operator`: a checkout's
root on sys.path must not replace the standard library's `operator` (which half the standard
library imports)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_checkout_root_on_sys_path_still_gives_the_stdlib_operator():
    # -S: no site, so nothing has imported the stdlib's operator before this import does.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import operator; "
            "from operator import itemgetter, or_; assert or_(1, 2) == 3; print(operator.__file__)")
    done = subprocess.run([sys.executable, "-S", "-c", code, str(ROOT)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).name == "operator.py"
    assert Path(done.stdout.strip()).parent != ROOT / "operator"


def test_kastor_operator_is_still_the_kastor_operator():
    done = subprocess.run([sys.executable, "-c", "import kastor.operator as o; print(o.__doc__.splitlines()[0])"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Kastor Kubernetes operator" in done.stdout
