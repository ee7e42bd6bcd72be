"""No import circles anywhere in the package (issue 12): module-level imports between glag's modules form a DAG.

Imports inside functions are left out on purpose: they are how a lower layer reaches an optional upper one
late (e.g. a progress line), which cannot form a circle at import time."""
import ast
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def modules() -> dict:
    """{dotted module name: source path} for every module of the installed layout (package-dir mapping)."""
    dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    out = {}
    for package, folder in dirs.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            out.setdefault(name[: -len(".__init__")] if name.endswith(".__init__") else name, path)
    return out


def top_level_imports(name: str, path: Path, known: set) -> set:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:               # module level only
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def test_module_imports_form_no_circle():
    mods = modules()
    graph = {n: top_level_imports(n, p, set(mods)) for n, p in mods.items()}
    state, cycle = {}, []

    def visit(n, stack):
        state[n] = "open"
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                cycle.extend(stack[stack.index(m):] + [m])
                return True
            if m not in state and visit(m, stack + [m]):
                return True
        state[n] = "done"
        return False

    for n in sorted(graph):
        if n not in state and visit(n, [n]):
            break
    assert not cycle, " -> ".join(cycle)


def test_the_graph_sees_the_package():
    mods = modules()
    assert {"glag.cli.util", "glag.data.bank", "glag.extract.cli", "glag.reproduce.run"} <= set(mods)
    assert "glag.data.layout" in top_level_imports("glag.cli.util", mods["glag.cli.util"], set(mods))
