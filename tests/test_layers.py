"""The import layering of docs/architecture.md, checked on the source: every `import` and
`from ... import` in every module (function-level ones included, `if TYPE_CHECKING:` blocks
excluded: they never run) may reach only its own layer or a lower one.

    utilities -> data -> backbones -> features -> heads -> detector / localize -> training
              -> evaluation -> scale / service / generate -> cli

A violation that is known and not yet fixed is listed in ALLOWED_UPWARD with its reason; the
test fails on any other, and on an entry that no longer occurs (so the list only shrinks).
A second check: no module imports a private (`_name`) from another package; a third: no two
modules import each other, directly or around a circle.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS = ["utilities", "data", "backbones", "features", "heads", "detector", "training", "evaluation", "scale", "cli"]

# module or package -> layer; the longest matching prefix wins
PLACES = {
    "fakescope": "utilities",  # the package __init__: version and the lazy load_detector
    "fakescope.images": "utilities", "fakescope.saving": "utilities", "fakescope.progress": "utilities",
    "fakescope.lazy": "utilities", "fakescope.errors": "utilities",
    "fakescope.hub": "utilities",  # model folders on the Hugging Face Hub, beside saving.py
    "fakescope.files": "utilities",  # atomic writes and JSON-lines files
    "fakescope.imageops": "utilities",  # JPEG / blur / rescale shared by views, robustness and edits
    "fakescope.uncertainty": "utilities",  # the "uncertain" verdict rule: numpy over scores
    "fakescope.provenance": "utilities",   # metadata of encoded bytes (C2PA, XMP, EXIF, PNG text); no model
    # pure numpy maths of (labels, scores); heads, training and the localiser score with them too
    "fakescope.evaluation.metrics": "utilities", "fakescope.evaluation.calibration": "utilities",
    "fakescope.evaluation.localization": "utilities",
    "fakescope.data": "data",
    "fakescope.backbones": "backbones",
    # decode -> preprocess -> batch (pipeline) and the feature cache / extraction built on it
    "fakescope.features": "features", "fakescope.pipeline": "features",
    "fakescope.heads": "heads",
    "fakescope.detector": "detector", "fakescope.localize": "detector",
    "fakescope.training": "training",
    "fakescope.evaluation": "evaluation",
    "fakescope.scale": "scale", "fakescope.service": "scale", "fakescope.generate": "scale",
    "fakescope.cli": "cli", "fakescope.__main__": "cli", "fakescope.clitools": "cli",
}
COMMAND_MODULE = "commands"  # <package>.commands: a group of CLI commands, registered in cli/__init__.py

# (importer, imported) -> why it is still there
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    ("fakescope", "fakescope.detector"):
        "the package facade: `from fakescope import load_detector` imports the detector on first use",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    if module.rsplit(".", 1)[-1] == COMMAND_MODULE:
        return LAYERS.index("cli")
    places = [p for p in PLACES if module == p or (p != "fakescope" and module.startswith(p + "."))]
    if not places:
        raise KeyError(f"{module} has no layer: add it (or its package) to PLACES in tests/test_layers.py")
    return LAYERS.index(PLACES[max(places, key=len)])


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


@lru_cache(maxsize=1)  # one walk of the source serves every test below
def imports() -> list[tuple[str, str, list[str], int]]:
    """(importer, imported module, names taken from it, line) for every fakescope-internal import."""
    modules = {module_name(p): p for p in (SRC / "fakescope").rglob("*.py")}
    out = []
    for mod, path in sorted(modules.items()):
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out += [(mod, a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "fakescope"]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                if base.split(".")[0] != "fakescope":
                    continue
                for a in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{base}.{a.name}"
                    if sub in modules:
                        out.append((mod, sub, [], node.lineno))
                    else:
                        out.append((mod, base, [a.name], node.lineno))
    return out


def upward() -> dict[tuple[str, str], int]:
    found = {}
    for mod, target, _, line in imports():
        try:
            if layer_of(target) <= layer_of(mod):
                continue
        except KeyError:  # reported by test_every_module_has_a_layer
            continue
        found.setdefault((mod, target), line)
    return found


def test_every_module_has_a_layer():
    unplaced = []
    for path in (SRC / "fakescope").rglob("*.py"):
        try:
            layer_of(module_name(path))
        except KeyError as e:
            unplaced.append(str(e))
    assert not unplaced, "\n".join(unplaced)


def test_the_walk_sees_known_imports():
    # the checks below mean something only if the walk finds imports, function-level ones included
    edges = {(m, t) for m, t, _, _ in imports()}
    assert ("fakescope.detector", "fakescope.heads") in edges
    assert ("fakescope.cli.scan", "fakescope.detector") in edges  # imported inside the scan command
    assert layer_of("fakescope.scale.commands") == LAYERS.index("cli")
    assert layer_of("fakescope.heads.linear") < layer_of("fakescope.detector") < layer_of("fakescope.cli")


def test_no_new_upward_import():
    found = upward()
    new = {k: v for k, v in found.items() if k not in ALLOWED_UPWARD}
    assert not new, "lower layer imports a higher one (move the code down, or pass it in):\n" + "\n".join(
        f"  {m} ({LAYERS[layer_of(m)]}) line {line} -> {t} ({LAYERS[layer_of(t)]})" for (m, t), line in sorted(new.items()))


def test_allowed_upward_entries_still_exist():
    gone = sorted(set(ALLOWED_UPWARD) - set(upward()))
    assert not gone, f"fixed, remove from ALLOWED_UPWARD: {gone}"


def test_no_private_name_imported_from_another_package():
    def package(module: str) -> str:
        return module if (SRC / Path(*module.split("."))).is_dir() else module.rpartition(".")[0]

    bad = sorted(f"{m} line {line}: {n} from {t}" for m, t, names, line in imports()
                 for n in names if n.startswith("_") and not n.startswith("__") and package(m) != package(t))
    assert not bad, "private names used across packages (make them public or move them):\n  " + "\n  ".join(bad)


def test_no_two_modules_import_each_other():
    # a cycle hides which of two modules is the lower one: a registry sits below the modules that
    # register into it, and what two modules share goes into a third below both
    graph: dict[str, set[str]] = {}
    for mod, target, _, _ in imports():
        if mod != target:
            graph.setdefault(mod, set()).add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(part) > 1:
                cycles.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "modules that import each other (function-level imports included):\n" + "\n".join(
        "  " + " <-> ".join(c) for c in cycles)
