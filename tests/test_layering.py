"""The package's import structure (docs/architecture.md, "Layers"): every module belongs to a layer, imports point
only downward (or within a layer), there is no import circle, and no module imports another's underscore names.
Read from the source with ast, lazy imports inside functions included: a circle through a function-level import is
still a circle. No allow-list."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hybridlm"

# prefix -> rank; the longest matching prefix wins. Same rank may import each other (without circles).
LAYERS = {
    "hybridlm.registry": 0, "hybridlm.core": 0,
    "hybridlm.ops": 1,
    "hybridlm.layers": 2,
    "hybridlm.model": 3, "hybridlm.presets": 3,
    "hybridlm.interop": 4, "hybridlm.training": 4, "hybridlm.analysis": 4,
    "hybridlm": 5,  # the package's public API (__init__: re-exports of model, presets, interop)
    "hybridlm.cli": 6,
}
NAMES = {0: "core", 1: "ops", 2: "layers", 3: "model", 4: "interop/training/analysis", 5: "public API", 6: "cli"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def rank(module: str) -> int | None:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    return LAYERS[best] if best else None


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if node.level > 1:
        base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, source: str | None = None, is_pkg: bool | None = None) -> list[tuple[str, str | None, int]]:
    """-> [(imported hybridlm module, name imported from it or None, line)] of a module of the package (or of
    `source`, as if it were that module)."""
    if source is None:
        source, is_pkg = MODULES[module].read_text(), MODULES[module].name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "hybridlm"]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, bool(is_pkg), node) if node.level else node.module or ""
            if target.split(".")[0] != "hybridlm":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (target, a.name, node.lineno))
    return out


def test_every_module_has_a_layer():
    assert [m for m in MODULES if rank(m) is None] == []


def test_imports_point_down():
    bad = []
    for m in MODULES:
        for target, _, line in imports(m):
            if target in MODULES and rank(target) > rank(m):
                bad.append(f"{m}:{line} ({NAMES[rank(m)]}) imports {target} ({NAMES[rank(target)]})")
    assert bad == []


def test_only_the_cli_imports_the_cli():
    bad = [f"{m}:{line}" for m in MODULES if not m.startswith("hybridlm.cli")
           for target, _, line in imports(m) if target.startswith("hybridlm.cli")]
    assert bad == []


def test_no_underscore_names_across_modules():
    bad = [f"{m}:{line} imports {name} from {target}" for m in MODULES for target, name, line in imports(m)
           if name and name.startswith("_") and not name.startswith("__") and target != m]
    assert bad == []


def test_no_import_circles():
    graph = {m: sorted({t for t, _, _ in imports(m) if t in MODULES and t != m}) for m in MODULES}
    # A package imports its own submodules (re-exports) and they import it back only for what it defines: a
    # submodule importing its parent package __init__ is the circle we refuse, like any other.
    state, stack, circles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == "open":
                circles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert circles == []


def test_the_checker_sees_violations():
    """The checks above are only worth something if they can fail: a made-up ops module that imports upward, from
    the CLI, and a private name."""
    found = imports("hybridlm.ops.probe", "from ..model import HybridLM\nfrom ..core.config import _private\n"
                    "def f():\n    import hybridlm.cli\n", is_pkg=False)
    assert ("hybridlm.model", "HybridLM", 1) in found or ("hybridlm.model", None, 1) in found
    assert ("hybridlm.core.config", "_private", 2) in found and ("hybridlm.cli", None, 4) in found
    assert rank("hybridlm.ops.probe") < rank("hybridlm.model.model") < rank("hybridlm.cli.app")
