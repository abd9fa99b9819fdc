"""The package's shape: modules import each other in one direction only (no cycles at import time)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "slowai"


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """slowai modules imported at module level (imports inside functions are deliberate, lazy and not counted)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("slowai"):
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("slowai")}
    return out


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in top_level_imports(p) if i in mods and i != m} for m, p in mods.items()}


def test_learner_does_not_import_the_callbacks_module():
    assert "slowai.callbacks" not in graph()["slowai.learner"]
    assert {"slowai.core"} <= graph()["slowai.learner"]


def test_no_module_imports_itself_back_through_others():
    g = graph()
    packages = {m for m in g if (PKG.parent / m.replace(".", "/") / "__init__.py").exists()}

    def reaches(start: str, target: str) -> bool:
        seen, todo = set(), [d for d in g[start] if d not in packages]
        while todo:
            m = todo.pop()
            if m == target:
                return True
            if m not in seen:
                seen.add(m)
                todo += [d for d in g[m] if d not in packages]
        return False

    cycles = sorted(m for m in g if m not in packages and reaches(m, m))
    assert cycles == []
