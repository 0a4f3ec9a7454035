"""The house's arrows point down: every import between iprox_ray's packages, lazy ones and the
registries' "module:attribute" targets included, goes from a higher layer to a lower one, and no
module imports itself back through others.

The layers (README, "Repository map"), bottom first; a package may import only packages of
lower layers (two packages of one layer know nothing of each other).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "iprox_ray"
LAYERS = [
    {"spec", "registry"},
    {"store"},
    {"corpus", "models", "execution"},
    {"sketch"},
    {"influence", "proxy"},
    {"methods"},
    {"tasks"},
    {"diagnostics"},
    {"stages"},
    {"report"},
    {"driver"},
    {"cost"},
    {"cli"},
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
UNLAYERED = {"<root>", "demo"}  # the package's __init__ (version only) and the bundled demo assets
TARGET = re.compile(r"iprox_ray(\.\w+)+(:\w+)?")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every iprox_ray module this file imports: top-level, inside functions, under TYPE_CHECKING,
    and every string that names one ("iprox_ray.x.y" or "iprox_ray.x.y:attr", as registries do)."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and TARGET.fullmatch(node.value):
            found.add(node.value.split(":")[0])
    return {m for m in found if m == "iprox_ray" or m.startswith("iprox_ray.")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = defaultdict(set)
    for name, path in modules.items():
        for target in imports_of(path):
            # `from iprox_ray.x import y` names a module when y is one, else an attribute of x
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                edges[name].add(target)
    return edges


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def test_every_package_has_a_layer():
    packages = {package_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert packages - UNLAYERED - set(RANK) == set(), "a new package needs its place in LAYERS (and the README map)"


def test_imports_point_down():
    upward = []
    for module, targets in graph().items():
        a = package_of(module)
        for target in targets:
            b = package_of(target)
            if a == b or {a, b} & UNLAYERED and b == "<root>":
                continue
            if a in UNLAYERED or b in UNLAYERED or RANK[b] >= RANK[a]:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_import_cycles():
    edges = graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_walk_sees_lazy_and_registry_imports(tmp_path):
    """The checks above are only as good as the walk: it must see an import inside a function and
    a registry's "module:attr" string, not only top-level imports."""
    probe = PACKAGE / "methods" / "registry.py"
    assert "iprox_ray.methods.less" in imports_of(probe)
    lazy = [p for p in PACKAGE.rglob("*.py") if re.search(r"^\s+from iprox_ray\.", p.read_text(), re.M)]
    assert lazy, "no function-level import found: the walk's lazy-import case is untested"
    for path in lazy[:5]:
        inner = {m for m in re.findall(r"^\s+from (iprox_ray[\w.]*) import", path.read_text(), re.M)}
        assert inner <= imports_of(path)


REGISTRIES = ["iprox_ray.methods.registry:METHODS", "iprox_ray.sketch.kinds:SKETCH_KINDS",
              "iprox_ray.sketch.embedding_kinds:EMBEDDING_KINDS", "iprox_ray.execution.launchers:LAUNCHERS"]


@pytest.mark.parametrize("registry", REGISTRIES)
def test_registry_targets_exist(registry):
    import importlib

    module, attr = registry.split(":")
    table = getattr(importlib.import_module(module), attr)
    for name, target in table.targets().items():
        mod, obj = target.split(":")
        assert hasattr(importlib.import_module(mod), obj), f"{name}: {target}"
