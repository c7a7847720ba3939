"""The tree's layering, checked from the source: a shared core, a builder, an installer, no cycles.

- ``edgebundle`` (the format and its trust) imports neither ``bundler`` nor ``installer``.
- ``installer`` never imports ``bundler``: a site's installer carries no build machinery.
- ``bundler`` imports of ``installer`` are limited to the modules the build-time proof runs (the
  site's own renderer and policy, and the site file they read), listed in ``BUILDER_MAY_USE``.
- No import cycle among product modules, counting function-local and ``TYPE_CHECKING`` imports:
  a cycle hidden inside a function is still a cycle in the design.
And, at run time: ``installer verify`` of a real bundle loads no ``bundler`` module.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("edgebundle", "bundler", "installer")
# installer.helmrender: the build-time proof renders charts with the site's own Helm renderer.
# installer.rolloutspec (and the gate defaults of installer.metrics): lint checks rollout annotations.
BUILDER_MAY_USE = {"installer.render", "installer.policy", "installer.site", "installer.helmrender",
                   "installer.rolloutspec", "installer.metrics"}


def product_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            here = here[:len(here) - node.level + 1]
            base = ".".join(here + ([base] if base else []))
        # ``from pkg import mod`` imports the module; ``from mod import name`` the module itself
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = []
    for name in names:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name != module:
            out.append(name)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the product modules it imports anywhere in its source (functions included)."""
    known = product_modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = {dep for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                         for dep in _imported(module, path, node, known)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_graph_sees_every_kind_of_import() -> None:
    """The checker itself: function-local, relative and TYPE_CHECKING imports all count."""
    graph = import_graph()
    assert "edgebundle.verify" in graph["installer.core"]
    assert "edgebundle.rebuild" in graph["edgebundle.verify"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert len(graph) > 60


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_layers() -> None:
    graph = import_graph()
    wrong = []
    for module, deps in graph.items():
        top = module.split(".")[0]
        for dep in deps:
            other = dep.split(".")[0]
            if top == "edgebundle" and other != "edgebundle":
                wrong.append(f"{module} (shared core) imports {dep}")
            elif top == "installer" and other == "bundler":
                wrong.append(f"{module} (installer) imports the builder's {dep}")
            elif top == "bundler" and other == "installer" and dep not in BUILDER_MAY_USE:
                wrong.append(f"{module} (builder) imports {dep}")
    assert not wrong, "\n".join(sorted(wrong))


_PROBE = """
import json, sys
from installer.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
    code = 0
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "builder": sorted(m for m in sys.modules if m.split(".")[0] == "bundler"),
                  "core": sorted(m for m in sys.modules if m.split(".")[0] == "edgebundle")}))
"""


def test_installer_verify_loads_no_builder_module(bundle_factory, tmp_path: Path) -> None:  # noqa: ANN001
    b = bundle_factory()
    site = b.site(tmp_path, "127.0.0.1:1")
    r = subprocess.run([sys.executable, "-c", _PROBE, "verify", str(b.path), "--site", str(site)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["code"] in (0, None), r.stderr  # the bundle verified: the run reached the verifier
    assert "edgebundle.verify" in seen["core"] and "edgebundle.signing" in seen["core"]
    assert seen["builder"] == [], f"installer verify loaded builder modules: {seen['builder']}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_says_what_it_is(package: str) -> None:
    doc = ast.get_docstring(ast.parse((REPO / package / "__init__.py").read_text()))
    assert doc and len(doc) > 80, f"{package}/__init__.py needs a docstring saying what the package owns"
