"""Every example runs to its own end-of-run check, as a user would run it (its own process and cluster),
and the code shown in the README and docs/ is valid and runs."""

import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = sorted(pathlib.Path(__file__).resolve().parent.parent.joinpath("examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(example, tmp_path):
    result = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=180,
                            cwd=tmp_path)
    assert result.returncode == 0, f"{example.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    last = result.stdout.strip().splitlines()[-1]
    assert last.endswith(("example OK", "All checks passed.")), last


# The code in the README and the docs pages (docs/**/*.md) is checked too: the README's example
# runs and prints what its comments say, every Python block is valid Python, and every file a
# shell block names exists. The README's text moved into docs/; these checks moved with it.
ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
REPO_PATH = re.compile(r"(?<![\w./-])((?:examples|charts|crds|tests|bench|runtime|client|operator|\.ci)/[\w./-]*\w"
                       r"|kind-config\.yaml|Dockerfile|constraints\.txt|mkdocs\.yml)")


def _blocks(page: pathlib.Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


def test_readme_keeps_the_test_command():
    assert 'pip install -e ".[test]" && python -m pytest -q' in (ROOT / "README.md").read_text()


RUNNABLE = ["README.md", "docs/getting-started.md"]  # their first Python block is a whole program


@pytest.mark.parametrize("page", RUNNABLE)
def test_example_block_prints_what_its_comments_say(page, tmp_path):
    example = _blocks(ROOT / page, "python")[0]
    expected = [line.split("#", 1)[1].strip() for line in example.splitlines()
                if line.startswith("print(") and "#" in line]
    assert expected, f"{page}'s example has no `print(...)  # expected output` lines to check"
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, f"{page}'s example failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    printed = [line for line in result.stdout.splitlines() if not line.startswith("(")]  # drop worker output
    assert printed == expected


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_python_blocks_compile(page):
    for block in _blocks(page, "python"):
        compile(block, f"{page.name} python block", "exec")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_commands_name_files_that_exist(page):
    for block in _blocks(page, "bash"):
        for path in REPO_PATH.findall(block):
            assert (ROOT / path).exists(), f"{page.relative_to(ROOT)}: a command names {path}, which does not exist"
