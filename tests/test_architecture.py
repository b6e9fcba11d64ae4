"""The package's shape: imports run one way, and a stage's cache key covers only the code it runs.

Imports are read with ``ast`` from every module of ``hammer_core``, function-level imports
included, and an import of ``a.b.c`` also counts as importing the packages ``a`` and ``a.b`` (Python
runs their ``__init__``) unless the importer is inside them.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from hammer_core import caching

PACKAGE = Path(caching.__file__).resolve().parent

#: The layers, in import order: a module imports only from its own layer and the ones before it.
#: The root vocabulary first, then the stage packages in pipeline order, then the stage API
#: (caching knows every stage's inputs; the register stage reads the train stage's cache config
#: through it; stages.py dispatches to all of them).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("vocabulary", ("hammer_core", "hammer_core.config", "hammer_core.schema", "hammer_core.artifacts",
                    "hammer_core.paths", "hammer_core.locking", "hammer_core.bfcl_categories",
                    "hammer_core.mlflow_store")),
    ("data", ("hammer_core.data",)),
    ("model", ("hammer_core.model",)),
    ("train", ("hammer_core.train",)),
    ("evaluation", ("hammer_core.evaluation",)),
    ("caching", ("hammer_core.caching",)),
    ("registry", ("hammer_core.registry",)),
    ("stages", ("hammer_core.stages",)),
]


def module_files(package: Path) -> dict[str, Path]:
    """``{dotted module name: source file}`` of every module under ``package`` (named hammer_core)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = ("hammer_core", *path.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(package: Path) -> dict[str, set[str]]:
    """``{module: the hammer_core modules it imports}``, anywhere in the file."""
    files = module_files(package)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:  # ``from pkg import submodule`` imports the submodule
                    full = f"{module}.{alias.name}"
                    targets.add(full if full in files else module)
        found = set()
        for target in targets:
            if target not in files:
                continue  # not ours (or a compiled extension)
            found.add(target)
            found.update(a for a in _ancestors(target) if a not in _ancestors(name) and a != name)
        found.discard(name)
        graph[name] = found
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_of(module: str) -> int:
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    assert index is not None, f"{module} is in no layer: add it to LAYERS"
    return index


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(target) > layer_of(module):
                out.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                           f"({LAYERS[layer_of(target)][0]})")
    return out


def test_no_import_cycle_anywhere():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_data_imports_no_later_stage():
    later = ("hammer_core.model", "hammer_core.train", "hammer_core.evaluation", "hammer_core.registry",
             "hammer_core.caching", "hammer_core.stages")
    bad = [f"{m} imports {t}" for m, ts in import_graph(PACKAGE).items() if m.startswith("hammer_core.data")
           for t in ts if t.startswith(later)]
    assert not bad, "\n".join(bad)


def test_imports_run_one_way_through_the_layers():
    assert not (bad := layering_violations(import_graph(PACKAGE))), "\n".join(bad)


def test_the_checks_see_function_level_imports_and_package_inits(tmp_path):
    pkg = tmp_path / "hammer_core"
    for rel, text in {"__init__.py": "", "config.py": "def f():\n    from hammer_core.data import ingest\n",
                      "data/__init__.py": "from hammer_core.data import ingest\n",
                      "data/ingest.py": "import json\n", "data/validation.py": "from hammer_core.data.ingest import x\n",
                      "model/__init__.py": "", "model/base.py": "from hammer_core.config import f\n"}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph = import_graph(pkg)
    assert graph["hammer_core.config"] == {"hammer_core.data.ingest", "hammer_core.data"}  # lazy, and the package
    assert graph["hammer_core.data.validation"] == {"hammer_core.data.ingest"}  # its own package is running already
    assert find_cycle(graph) is None
    (pkg / "data" / "ingest.py").write_text("def g():\n    from hammer_core.model import base\n")
    assert find_cycle(import_graph(pkg)) is not None  # ingest -> model.base -> config -> ingest
    assert layering_violations(import_graph(pkg))


# --------------------------------------------------------------------------- cache keys

UPSTREAM = ("ingest", "prepare", "train")


def _code_versions(monkeypatch, package: Path) -> dict[str, str]:
    monkeypatch.setattr(caching, "PACKAGE_DIR", package)
    caching.code_version.cache_clear()
    try:
        return {stage: caching.code_version(stage) for stage in caching.CACHED_STAGES}
    finally:
        caching.code_version.cache_clear()


@pytest.mark.parametrize("later", ["evaluation", "registry"])
def test_editing_an_eval_or_registry_module_leaves_ingest_prepare_and_train_cached(later, tmp_path, monkeypatch):
    copy = tmp_path / "hammer_core"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = _code_versions(monkeypatch, copy)
    for path in sorted((copy / later).rglob("*.py")):
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        after = _code_versions(monkeypatch, copy)
        path.write_text(original)
        for stage in UPSTREAM:
            assert after[stage] == before[stage], f"editing {path.relative_to(copy)} changes the {stage} key"
    stage_py = copy / "evaluation" / "stage.py"
    stage_py.write_text(stage_py.read_text() + "\n# edited\n")
    assert _code_versions(monkeypatch, copy)["eval"] != before["eval"]  # the eval stage's own code counts


def test_a_stage_key_covers_the_package_inits_python_runs(tmp_path, monkeypatch):
    copy = tmp_path / "hammer_core"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = _code_versions(monkeypatch, copy)
    init = copy / "data" / "__init__.py"
    init.write_text(init.read_text() + "\n# edited\n")
    after = _code_versions(monkeypatch, copy)
    assert after["ingest"] != before["ingest"] and after["prepare"] != before["prepare"]
    assert after["train"] == before["train"]  # training runs no data code
