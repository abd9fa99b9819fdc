"""The notebooks in nbs/: each `.ipynb` is paired with a jupytext py:percent source (`.py`, the reviewable one) and
committed in sync with it and executed, with outputs; and each runs top to bottom without a cell error in quick mode
(SLOWAI_NB_QUICK=1).

After editing a `.py`: `jupytext --sync nbs/<name>.py`, then execute the notebook (see nbs/README.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parents[1] / "nbs"
NOTEBOOKS = sorted(NBS.glob("*.ipynb"))
SOURCES = sorted(NBS.glob("*.py"))
CELL_TIMEOUT_S = 600
# Notebooks whose point is a result: their committed outputs must show a plot or a markdown table.
RICH = {"02_residual_vs_plain.ipynb", "03_resnet_ablation.ipynb"}
ids = [p.name for p in NOTEBOOKS]


def _read(path: Path):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(path, as_version=4)


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _outputs(nb) -> list:
    return [o for c in _code_cells(nb) for o in c.get("outputs", [])]


def test_every_notebook_has_its_source() -> None:
    assert {p.stem for p in NOTEBOOKS} == {p.stem for p in SOURCES}, "each nbs/X.ipynb needs nbs/X.py, and back"
    assert {"01_summary", "02_residual_vs_plain", "03_resnet_ablation"} <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_in_sync_with_its_source(path: Path) -> None:
    """Same cells, same kinds, same sources as the .py says: the .py is what is reviewed, the .ipynb what is seen."""
    jupytext = pytest.importorskip("jupytext")
    nb, src = _read(path), jupytext.read(path.with_suffix(".py"))
    assert nb.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", "pair it: jupytext --set-formats"
    cells = [(c.cell_type, c.source) for c in nb.cells]
    expected = [(c.cell_type, c.source) for c in src.cells]
    assert cells == expected, f"{path.name} is out of sync with {path.stem}.py: run jupytext --sync, then execute it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_committed_executed(path: Path) -> None:
    """Executed top to bottom in one kernel (execution counts 1..n), without errors, and with something to see."""
    nb = _read(path)
    counts = [c.get("execution_count") for c in _code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: execute it top to bottom; counts {counts}"
    outputs = _outputs(nb)
    assert outputs, f"{path.name}: no code cell has an output"
    assert not [o for o in outputs if o.output_type == "error"], f"{path.name}: a cell's output is an error"
    if path.name in RICH:
        data = [o.get("data", {}) for o in outputs]
        plots = [d for d in data if "image/png" in d]
        tables = [d for d in data if "| ---" in str(d.get("text/markdown", ""))]
        assert plots or tables, f"{path.name}: expected a plot (image/png) or a markdown table among its outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a copy of nbs/ in a temp dir, so files a notebook writes never land in the repository."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    work = tmp_path / "nbs"
    shutil.copytree(NBS, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "runs"))
    monkeypatch.setenv("SLOWAI_NB_QUICK", "1")  # the kernel inherits this process's environment
    nb = nbformat.read(work / path.name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell and its traceback, on the first failing cell
