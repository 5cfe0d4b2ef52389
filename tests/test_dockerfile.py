"""The Dockerfile's promises (issue 12 defect 18), checked without a Docker engine.

A small parser reads it into stages (FROM ... AS name) of instructions, with line
continuations joined, so each test asks about a target as `docker build --target` sees it:
the stage and the stages it is built FROM. The dependency lists the stages install come from
the Dockerfile's own script, run here against pyproject.toml.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("client", "runtime", "operator")


@dataclass
class Stage:
    name: str
    parent: str  # the image or stage it is built FROM
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)


def parse(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """The global ARG defaults and the stages by name."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        logical += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if stripped.endswith("\\"):
            continue
        instruction, _, rest = logical.partition(" ")
        logical = ""
        instruction = instruction.upper()
        if instruction == "FROM":
            words = rest.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"every stage is named: FROM {rest}"
            current = stages[words[2]] = Stage(words[2], words[0])
        elif current is None:
            assert instruction == "ARG", f"only ARG may come before the first FROM, not {instruction}"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            current.instructions.append((instruction, rest.strip()))
    return args, stages


ARGS, STAGES = parse((ROOT / "Dockerfile").read_text())


def chain(target: str) -> list[Stage]:
    """The stages `docker build --target target` builds, first to last."""
    stages = []
    name: str | None = target
    while name in STAGES:
        stages.insert(0, STAGES[name])
        name = STAGES[name].parent
    return stages


def steps(target: str) -> list[tuple[str, str]]:
    return [step for stage in chain(target) for step in stage.instructions]


def base_image(target: str) -> str:
    image = chain(target)[0].parent
    match = re.fullmatch(r"\$\{(\w+)\}", image)
    return ARGS[match.group(1)] if match else image


def requirements(extras: list[str]) -> list[str]:
    """What the Dockerfile's requirements.py prints for `extras`, run on pyproject.toml."""
    run = next(arguments for instruction, arguments in STAGES["base"].instructions
               if instruction == "RUN" and "requirements.py" in arguments)
    script = "\n".join(shlex.split(run.split("printf '%s\\n'", 1)[1].split(">", 1)[0]))
    done = subprocess.run([sys.executable, "-c", script, *extras], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.split()


def installed_extras(target: str) -> list[str]:
    """The extras the target's `requirements.py` calls name, and any `.[extra]` pip install."""
    extras = []
    for instruction, arguments in steps(target):
        if instruction != "RUN":
            continue
        for call in re.findall(r"requirements\.py([^>&|]*)", arguments):
            extras += call.split()
        extras += re.findall(r"pip install [^&]*\.\[([\w,]+)\]", arguments)
    return extras


@pytest.mark.parametrize("target", ["runtime", "operator"])
def test_the_targets_exist_and_run_under_tini(target):
    assert target in STAGES, f"`docker build --target {target}` needs a stage of that name: {sorted(STAGES)}"
    entrypoints = [json.loads(a) for i, a in steps(target) if i == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == ["/usr/bin/tini", "--"], entrypoints
    installs = [a for i, a in steps(target) if i == "RUN" and "apt-get install" in a]
    assert any(re.search(r"\btini\b", a) for a in installs), "tini comes from Debian's apt"
    users = [a for i, a in steps(target) if i == "USER"]
    assert users and users[-1].split(":")[0] == "1000", "the image runs as a non-root user"


def source_stages(stages: dict[str, Stage]) -> list[str]:
    """The stages that COPY Kastor's source."""
    return [stage.name for stage in stages.values()
            if any(i == "COPY" and a.split()[0] in SOURCES for i, a in stage.instructions)]


def taken_from(arguments: str) -> list[str]:
    """The stages an instruction reads from: `COPY --from=<stage>`, `RUN --mount=...,from=<stage>,...`."""
    return re.findall(r"(?:^|[\s,])(?:--)?from=([\w.-]+)", arguments)


@pytest.mark.parametrize("target", ["runtime", "operator"])
def test_dependencies_are_installed_before_kastor_itself(target):
    seq = steps(target)
    assert not [a for i, a in seq if i == "COPY" and a.split()[0] in SOURCES], \
        "the image's own stages never copy the source: a source change would rebuild its dependency layers"
    deps = [n for n, (i, a) in enumerate(seq) if i == "RUN" and "pip install -r requirements.txt" in a
            and "-c constraints.txt" in a]
    assert deps, "a dependency layer installs the pinned requirements"
    taken = [n for n, (_, a) in enumerate(seq) if source_stages(STAGES)[0] in taken_from(a)]
    assert taken, f"{target} takes the wheel the source stage builds: {seq}"
    assert max(deps) < min(taken), "every dependency layer comes before Kastor itself"
    installs = [a for n, (i, a) in enumerate(seq) if i == "RUN" and "pip install" in a and n >= min(taken)]
    assert installs and all("--no-deps" in a for a in installs), \
        "pip installs only Kastor itself from the wheel (a dependency there would defeat the layer)"


def test_one_stage_builds_kastor_for_both_images():
    """The source is copied and built once (no copy of those steps per image), from the base alone."""
    stages = source_stages(STAGES)
    assert len(stages) == 1, f"one stage copies the source, not {stages}"
    [stage] = stages
    copied = {a.split()[0] for i, a in STAGES[stage].instructions if i == "COPY"}
    assert set(SOURCES) <= copied, copied
    assert [s.name for s in chain(stage)] == ["base", stage], "the wheel needs no dependency layer"
    assert [a for i, a in STAGES[stage].instructions if i == "RUN" and "pip wheel --no-deps" in a]
    for target in ("runtime", "operator"):
        assert [a for i, a in steps(target) if stage in taken_from(a)], f"{target} does not take the wheel"


def test_the_runtime_image_has_no_operator_dependencies_and_the_operator_image_has_them():
    assert "operator" not in installed_extras("runtime")
    assert "operator" in installed_extras("operator")
    runtime, operator = requirements([]), requirements(["operator"])
    assert not [r for r in runtime if r.startswith(("kubernetes", "kopf"))], runtime
    assert [r for r in operator if r.startswith("kubernetes")] and [r for r in operator if r.startswith("kopf")]
    assert set(runtime) < set(operator)


@pytest.mark.parametrize("target", ["runtime", "operator"])
def test_examples_are_not_on_the_path_of_the_shipped_images(target):
    for instruction, arguments in steps(target):
        assert not (instruction == "ENV" and "PYTHONPATH" in arguments), arguments
        assert not (instruction == "COPY" and "examples" in arguments), arguments


def test_the_demo_image_adds_only_the_examples_modules():
    """examples/kubernetes/ (manifests) would shadow the kubernetes package: only *.py files go in."""
    copies = [a for i, a in STAGES["demo"].instructions if i == "COPY"]
    assert copies == ["examples/*.py /opt/kastor/demo/"], copies
    assert chain("demo")[-2].name == "runtime"


def test_the_base_image_is_pinned():
    image = base_image("runtime")
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), \
        f"pin the base image to a patch release (or a digest), not {image!r}"
    assert base_image("operator") == image


def test_the_parser_sees_what_a_broken_dockerfile_breaks():
    """The checks above would fail on the old single image: source before deps, no tini, examples on the path."""
    old = ("FROM python:3.11-slim AS image\nENV PYTHONPATH=/opt/kastor/examples\nCOPY client ./client\n"
           "COPY examples ./examples\nRUN pip install \".[operator]\"\nENTRYPOINT []\n")
    _, stages = parse(old)
    stage = stages["image"]
    assert stage.parent == "python:3.11-slim"
    assert ("ENV", "PYTHONPATH=/opt/kastor/examples") in stage.instructions
    assert re.findall(r"pip install [^&]*\.\[([\w,]+)\]", stage.instructions[3][1]) == ["operator"]
    # Two images that each copied and installed the source repeated those steps (the stage check fails on it).
    twice = ("FROM python:3.11-slim AS deps\nFROM deps AS runtime\nCOPY client ./client\n"
             "FROM deps AS operator\nCOPY client ./client\nCOPY --from=runtime /a /b\n")
    _, stages = parse(twice)
    assert source_stages(stages) == ["runtime", "operator"]
    assert taken_from(stages["operator"].instructions[1][1]) == ["runtime"]
    assert taken_from("--mount=type=bind,from=wheel,source=/d,target=/t pip install /t/*.whl") == ["wheel"]
