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


# ------------------------------------------------------------------------------------------- the study's rooms
STUDY = "slowai.study"
ROOMS = ("planning", "coordination", "execution", "analysis", "report", "cli")
# Which rooms each room may import (every room may import slowai outside the study and the study's flat modules).
# The data flows one way: spec -> plan -> schedule -> run a trial -> analyse -> report; only coordination knows that
# other workers exist, and the answer (analysis, report) is a pure function of a StudyResult.
MAY_IMPORT = {
    "analysis": set(),
    "report": {"analysis"},
    "coordination": {"analysis"},  # readback fills the StudyResult
    "planning": {"coordination", "analysis"},
    "execution": {"coordination", "planning", "analysis"},
    "cli": set(ROOMS) - {"cli"} | {"runner"},
}
FLAT = {"spec", "space", "seeds", "data", "ablation"}  # what every room shares: they import no room
CONDUCTOR = "runner"  # calls the rooms in order; the command line sits above it


def room_of(module: str) -> str | None:
    """'planning' for slowai.study.planning.budget; 'spec' for slowai.study.spec; None outside the study."""
    parts = module.split(".")
    return parts[2] if parts[:2] == ["slowai", "study"] and len(parts) > 2 else None


def test_the_study_package_is_rooms_and_a_few_flat_modules():
    study = PKG / "study"
    rooms = {p.name for p in study.iterdir() if (p / "__init__.py").exists()}
    flat = {p.stem for p in study.glob("*.py")} - {"__init__"}
    assert rooms == set(ROOMS)
    assert flat == FLAT | {CONDUCTOR}


def test_rooms_import_each_other_one_way_only():
    bad = []
    for module, imports in graph().items():
        room = room_of(module)
        if room is None:
            continue
        for target in {room_of(i) for i in imports} - {None, room}:
            allowed = set(ROOMS) - {"cli"} | FLAT if room == CONDUCTOR else MAY_IMPORT.get(room, set()) | FLAT
            if target not in allowed:
                bad.append(f"{module} imports the {target} room")
    assert bad == []


def test_the_answer_never_reads_a_storage_and_planning_never_reads_the_command_line():
    g = graph()
    for module, imports in g.items():
        if room_of(module) in ("analysis", "report"):
            assert not any(room_of(i) == "coordination" or "optuna.storages" in i for i in imports), module
        if room_of(module) == "planning":
            assert not any(room_of(i) == "cli" for i in imports), module


def test_modules_and_functions_stay_readable_in_one_sitting():
    """No module over 300 lines, no function over 60: past that, split it where its parts have names."""
    long_modules, long_functions = [], []
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 300:
            long_modules.append(module_name(path))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long_functions.append(f"{module_name(path)}.{node.name}")
    assert long_modules == [] and long_functions == []


def layout_section() -> str:
    text = (PKG.parent / "README.md").read_text()
    start = text.index("\n## Layout\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_the_readme_layout_names_every_module():
    """Each module appears on a line of the Layout section: as its path, or by file name on its directory's line."""
    lines = layout_section().splitlines()
    missing = []
    for path in sorted(PKG.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        rel = path.relative_to(PKG.parent).as_posix()
        folder = rel.rsplit("/", 1)[0] + "/"
        if not any(f"`{rel}`" in line or (f"`{folder}`" in line and f"`{path.name}`" in line) for line in lines):
            missing.append(rel)
    assert missing == [], "add them to README.md's Layout section"
