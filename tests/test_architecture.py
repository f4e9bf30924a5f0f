"""Static checks on guard/: no import cycle, no import of another module's private name, one place builds a Guard."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "guard"


def modules() -> dict[str, ast.Module]:
    out = {}
    for f in sorted(ROOT.rglob("*.py")):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(f.read_text(), str(f))
    return out


def imports(tree: ast.Module, mods) -> list[tuple[str, str | None, int]]:
    """(module imported, name taken from it or None, line) for every guard import, lazy ones included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("guard")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("guard") and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append((sub, None, node.lineno) if sub in mods else (node.module, a.name, node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {t for t, _, _ in imports(tree, mods) if t in mods and t != m and not m.startswith(t + ".")}
            for m, tree in mods.items()}


def test_no_import_cycle():
    g = graph()
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles in guard/: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_name_imported_from_another_module():
    mods = modules()
    bad = [f"{m}:{line} imports {name} from {target}" for m, tree in mods.items()
           for target, name, line in imports(tree, mods)
           if name and name.startswith("_") and not name.startswith("__") and target != m]
    assert not bad, "\n".join(bad)


def test_guard_constructed_in_one_place():
    """Guard and VisionGuard instances are made by guard.runtime.load only (tests and the classes' own modules aside)."""
    mods = modules()
    names = ("Guard", "VisionGuard")
    calls = [f"{m}:{node.lineno}" for m, tree in mods.items() for node in ast.walk(tree) if isinstance(node, ast.Call)
             and (getattr(node.func, "id", None) in names or getattr(node.func, "attr", None) in names)]
    assert not calls, f"a Guard is built outside guard.runtime.load.make_guard: {calls}"
    made = {m for m, tree in mods.items() for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and any(a.name in names and a.asname == "cls" for a in node.names)}
    assert made == {"guard.runtime.load"}, made


def test_default_model_resolved_in_one_place():
    """guard.defaults.default_model is called by guard.runtime.load.resolve only: one resolver for every entry point."""
    mods = modules()
    calls = [f"{m}:{node.lineno}" for m, tree in mods.items() for node in ast.walk(tree) if isinstance(node, ast.Call)
             and "default_model" in (getattr(node.func, "id", None), getattr(node.func, "attr", None))]
    assert calls and all(c.startswith("guard.runtime.load:") for c in calls), calls
