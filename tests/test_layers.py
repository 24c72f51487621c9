"""The package's shape: layers that only point down, no import cycles, a torch-free core.

The import graph is read from the source (every `import` statement, those inside
functions included), so an import that only runs in a rare branch counts too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

from conftest import HANG_GUARD_S

PACKAGE = Path(__file__).resolve().parents[1] / "dimba"

# Lowest first. A module may import its own layer and the layers before it, never a later one.
LAYERS: List[tuple] = [
    ("core", ("dimba.version", "dimba.errors", "dimba.internals", "dimba.checkpointing")),
    ("model", ("dimba.model", "dimba.diffusion", "dimba.objective", "dimba.objectives")),
    ("growth", ("dimba.growth",)),
    ("data", ("dimba.data",)),
    ("io", ("dimba.io",)),
    ("config", ("dimba.config",)),
    ("training", ("dimba.training", "dimba.utils")),
    ("top", ("dimba.run", "dimba.summary", "dimba.resume", "dimba.launch", "dimba.preflight", "dimba.cli",
             "dimba.plotting", "dimba")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """module -> the dimba modules it imports (a package's __init__ counts as the package)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: Dict[str, Set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def layer_of(module: str) -> int:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best[0]


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_nothing_imports_in_a_circle():
    assert cycles(import_graph()) == []


def test_layers_only_point_down():
    upward = [f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
              for module, targets in import_graph().items() for target in sorted(targets)
              if layer_of(target) > layer_of(module)]
    assert upward == []


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "dimba.io.load" in graph["dimba"]  # `load_model` is imported inside `__getattr__`
    assert "dimba.checkpointing.discovery" in graph["dimba.config.store"]  # inside register_configs


TORCH_FREE = ["dimba.config", "dimba.checkpointing.milestones", "dimba.checkpointing.format", "dimba.checkpointing.pending", "dimba.checkpointing.files",
              "dimba.checkpointing.discovery", "dimba.objective", "dimba.errors", "dimba.cli.checkpoints"]


def fresh_interpreter(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S,
                          cwd=PACKAGE.parent)


def test_the_config_the_milestones_and_the_format_import_no_torch():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in TORCH_FREE) +
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning')))")
    result = fresh_interpreter(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_composing_with_resume_auto_loads_no_torch(tmp_path):
    """Finding the run to continue reads sidecars and zip directories, never a checkpoint."""
    run = tmp_path / "outputs" / "2026-01-01" / "10-00-00.000001"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- growth=none\n")
    (run / "checkpoints").mkdir()
    import zipfile

    with zipfile.ZipFile(run / "checkpoints" / "last.ckpt", "w") as archive:
        archive.writestr("archive/data.pkl", b"not read")
    code = f"""
import os, sys
os.chdir({str(tmp_path)!r})
from hydra import compose, initialize_config_dir
from dimba.config import register_configs, validate
register_configs()
with initialize_config_dir(config_dir={str(PACKAGE.parent / 'conf')!r}, version_base="1.3"):
    cfg = compose("config", overrides=["growth=none", "resume=auto"], return_hydra_config=True)
    validate(compose("config", overrides=["growth=none", "resume=auto"]))
print(cfg.hydra.run.dir)
print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning')))
"""
    result = fresh_interpreter(code)
    assert result.returncode == 0, result.stderr
    chosen, imported = result.stdout.strip().splitlines()
    assert chosen == str(run.relative_to(tmp_path)) and imported == "[]"


def test_the_run_directorys_folder_names_are_written_once():
    """`dimba.checkpointing.layout` owns where a run's checkpoints live: no other module joins
    a path with "progressive_checkpoints" or "checkpoints" itself (`run_dir / "checkpoints"`)."""
    from dimba.checkpointing.layout import LIGHTNING_DIR, MILESTONE_DIR

    owner = PACKAGE / "checkpointing" / "layout.py"
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == owner:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
                    and node.right.value in (LIGHTNING_DIR, MILESTONE_DIR)):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert offenders == []
