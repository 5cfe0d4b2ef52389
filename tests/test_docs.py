"""The docs site builds with `mkdocs build --strict`, and its generated pages say what their sources say.

The README's test command runs these, so a broken link, a page left out of the nav, a docstring
mkdocstrings cannot render or a generated table that lost its source fails the suite, not only CI's
separate build step. Each build is a real `mkdocs` process on the repository's own mkdocs.yml.
"""

import html
import importlib
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mkdocs.yml"
BUILD_TIMEOUT_S = 240  # a build takes 3-20 s; the machine may be shared with other suites


def _build(config: pathlib.Path, site: pathlib.Path, *, prelude: str = "") -> subprocess.CompletedProcess:
    """`mkdocs build --strict` in a fresh interpreter; `prelude` runs first (to break something)."""
    code = f"{prelude}\nimport sys\nfrom mkdocs.__main__ import cli\nsys.exit(cli())"
    return subprocess.run(
        [sys.executable, "-c", code, "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, cwd=ROOT)


def _text(page: pathlib.Path) -> str:
    """The visible text of a built page, tags stripped and entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("site")
    result = _build(CONFIG, out)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return out


def _crd_fields(schema: dict, path: str) -> list[str]:
    """Every field path of a CRD schema, as the reference page writes them (lists as `[]`)."""
    paths = [path]
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        for name, sub in schema["items"].get("properties", {}).items():
            paths += _crd_fields(sub, f"{path}[].{name}")
    for name, sub in schema.get("properties", {}).items():
        paths += _crd_fields(sub, f"{path}.{name}")
    return paths


def _rule_messages(schema) -> list[str]:
    """The messages of every x-kubernetes-validations rule anywhere in a schema."""
    if isinstance(schema, list):
        return [m for item in schema for m in _rule_messages(item)]
    if not isinstance(schema, dict):
        return []
    own = [rule["message"] for rule in schema.get("x-kubernetes-validations", [])]
    return own + [m for key, sub in schema.items() if key != "x-kubernetes-validations" for m in _rule_messages(sub)]


def test_every_crd_field_is_in_the_reference(site):
    page = _text(site / "kubernetes" / "crd-reference" / "index.html")
    for crd_file in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(crd_file.read_text())
        assert crd["spec"]["names"]["kind"] in page
        for version in crd["spec"]["versions"]:
            root = version["schema"]["openAPIV3Schema"]["properties"]
            for part in ("spec", "status"):
                for field in _crd_fields(root.get(part, {}), part)[1:]:
                    assert field in page, f"{crd_file.name}: {field} is missing from the CRD reference"
            for message in _rule_messages(version["schema"]["openAPIV3Schema"]):
                assert message in page, f"{crd_file.name}: the CEL rule message {message!r} is missing"


def _leaf_keys(value, path: str = "") -> list[str]:
    if isinstance(value, dict) and value:
        return [key for name, sub in value.items() for key in _leaf_keys(sub, f"{path}.{name}" if path else name)]
    return [path]


def test_every_helm_value_is_listed(site):
    page = _text(site / "kubernetes" / "helm-values" / "index.html")
    for values in sorted((ROOT / "charts").glob("*/values.yaml")):
        for key in _leaf_keys(yaml.safe_load(values.read_text())):
            listed = re.search(rf"(?<![\w.]){re.escape(key)}(?![\w.])", page)
            assert listed, f"{values}: {key} is missing from the Helm values page"
        assert f"Generated from {values.relative_to(ROOT)}" in page


def test_every_setting_is_in_the_environment_table(site):
    settings = importlib.import_module("kastor.runtime.settings").all_settings()
    page = _text(site / "reference" / "environment" / "index.html")
    assert settings, "kastor.runtime.settings.all_settings() returned nothing"
    for setting in settings:
        assert setting.name in page, f"{setting.name} is missing from the environment-variable table"


def test_every_cli_command_has_its_help_in_the_cli_page(site):
    page = _text(site / "cli" / "index.html")
    top = subprocess.run([sys.executable, "-c", "import sys; from kastor.cli import main; sys.exit(main())",
                          "--help"], capture_output=True, text=True, timeout=120, check=True).stdout
    commands = re.search(r"\{([\w,-]+)\}", top).group(1).split(",")
    assert "start" in commands
    for command in commands:
        assert f"$ kastor {command} --help" in page, f"`kastor {command}` has no generated help in docs/cli.md"
    assert "--num-cpus" in page  # the help itself, not only its heading


def test_api_reference_renders_the_public_api(site):
    api = (site / "reference" / "api" / "index.html").read_text()
    for name in ("init", "shutdown", "remote", "method", "get", "wait", "put", "kill", "cancel", "get_actor",
                 "get_runtime_context", "ObjectRef", "ObjectRefGenerator", "ActorHandle", "ActorClass"):
        assert f'id="kastor.{name}"' in api, f"kastor.{name} is missing from the API reference"
    # The docstring, not only the heading: mkdocstrings found the source.
    assert "blocking until ready" in _text(site / "reference" / "api" / "index.html")
    exceptions = (site / "reference" / "exceptions" / "index.html").read_text()
    for name in ("TaskError", "ActorDiedError", "ActorUnavailableError", "GetTimeoutError", "TaskCancelledError",
                 "ObjectLostError", "OwnerDiedError", "WorkerCrashedError", "ObjectStoreFullError"):
        assert f'id="kastor.exceptions.{name}"' in exceptions, f"{name} is missing from the exceptions page"
    util = (site / "reference" / "util" / "index.html").read_text()
    for name in ("ActorPool", "list_named_actors", "state.list_actors", "queue.Queue", "multiprocessing.Pool"):
        assert f'id="kastor.util.{name}"' in util, f"kastor.util.{name} is missing from the utilities page"


def _copy_of_site_config(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """mkdocs.yml pointed at a copy of docs/ that a test may break; the hook stays the repository's."""
    config = yaml.safe_load(CONFIG.read_text())
    docs = tmp_path / "docs"
    subprocess.run(["cp", "-r", str(ROOT / "docs"), str(docs)], check=True)
    config["docs_dir"] = str(docs)
    config["hooks"] = [str(ROOT / hook) for hook in config["hooks"]]
    copy = tmp_path / "mkdocs.yml"
    copy.write_text(yaml.safe_dump(config))
    return copy, docs


def test_a_broken_link_fails_the_build(tmp_path):
    config, docs = _copy_of_site_config(tmp_path)
    page = docs / "security.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    result = _build(config, tmp_path / "site")
    assert result.returncode != 0, "a link to a missing page did not fail the strict build"
    assert "no-such-page.md" in result.stdout + result.stderr


def test_an_unknown_generator_fails_the_build(tmp_path):
    config, docs = _copy_of_site_config(tmp_path)
    page = docs / "kubernetes" / "crd-reference.md"
    page.write_text(page.read_text() + "\n<!-- generate: crd crds/no-such-crd.yaml -->\n")
    result = _build(config, tmp_path / "site")
    assert result.returncode != 0
    assert "crds/no-such-crd.yaml does not exist" in result.stdout + result.stderr


def test_a_missing_settings_module_fails_the_build_naming_it(tmp_path):
    # None in sys.modules makes `import kastor.runtime.settings` raise ImportError, as a missing file would.
    result = _build(CONFIG, tmp_path / "site", prelude="import sys; sys.modules['kastor.runtime.settings'] = None")
    assert result.returncode != 0, "the environment table was built without the settings module"
    output = result.stdout + result.stderr
    assert "cannot import kastor.runtime.settings" in output, output[-3000:]
    assert "reference/environment.md" in output


def test_readme_links_into_docs_resolve():
    """The README is not part of the site, so mkdocs cannot check its links: this does."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local), "the README links to no docs page"
    for link in local:
        assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"


def test_the_public_api_has_docstrings():
    """The API reference is made from docstrings: a public name without one would be an empty entry."""
    import kastor
    import kastor.util
    from kastor import job_config, runtime_context
    from kastor.util import multiprocessing, queue, scheduling_strategies, state

    objects = {f"kastor.{n}": getattr(kastor, n) for n in kastor.__all__ if callable(getattr(kastor, n))}
    for module in (kastor.exceptions, kastor.util, multiprocessing, queue, scheduling_strategies, state):
        exported = getattr(module, "__all__", None)
        for name in exported or [n for n in vars(module) if not n.startswith("_")]:
            obj = getattr(module, name)
            defined_here = getattr(obj, "__module__", None) == module.__name__
            if callable(obj) and (exported or defined_here) and name != "placement":
                objects[f"{module.__name__}.{name}"] = obj
    objects["kastor.job_config.JobConfig"] = job_config.JobConfig
    objects["kastor.runtime_context.RuntimeContext"] = runtime_context.RuntimeContext
    missing = [name for name, obj in objects.items()
               if not (obj.__doc__ or "").strip() or obj.__doc__.startswith(f"{obj.__name__}(")]  # dataclass filler
    assert not missing, f"public API without a docstring: {missing}"


def test_generated_descriptions_render_literally():
    """A description naming `__ray_shutdown__` or `<token>` reads as written, not as bold text or an HTML tag."""
    import importlib.util

    import markdown

    spec = importlib.util.spec_from_file_location("docs_hook", ROOT / "docs" / "hooks" / "generate.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    description = "runs __ray_shutdown__ and *atexit* handlers; Bearer <token> | in `a_b*c` [x]"
    table = f"| d |\n| --- |\n| {hook.prose(description)} |\n"
    rendered = markdown.markdown(table, extensions=["tables"])
    text = html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()
    assert text.splitlines()[-1] == description.replace("`", ""), rendered
