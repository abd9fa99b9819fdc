"""Trained models kept with the study: each confirm run's final weights, and `load_model` to get one back.

Weights go to Optuna's artifact store under `<out>/artifacts` (linked to their trial, so `optuna-dashboard` lists
them) and, when W&B tracking is on, to a W&B model artifact of the run. Beside the state dict the file holds how to
rebuild the model: registry name, kwargs (classes and functions by import path) and input channels/classes.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch
import torch.nn as nn
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

from slowai.models import create_model
from slowai.study.coordination import storage as st
from slowai.study.coordination.readback import confirmed_runs
from slowai.study.spec import StudyError
from slowai.utils import slug

if TYPE_CHECKING:
    from slowai.study.execution.tracking import TrackedRun
    from slowai.study.execution.trial import TrialContext

ARTIFACT_DIR = "artifacts"
ATTR = "model_artifact"


def artifact_store(out: Path) -> FileSystemArtifactStore:
    """The study's artifact store: a plain directory beside the report."""
    path = Path(out) / ARTIFACT_DIR
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(path)


def encode(v: Any) -> Any:
    """A kwarg value as JSON: scalars as they are, classes and functions as {"ref": "module:qualname"}."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [encode(x) for x in v]
    qual = getattr(v, "__qualname__", "")
    if getattr(v, "__module__", None) and qual and "<" not in qual:
        return {"ref": f"{v.__module__}:{qual}"}
    return {"unloadable": repr(v)}


def decode(v: Any) -> Any:
    """The inverse of `encode` (imports what a ref names)."""
    if isinstance(v, list):
        return [decode(x) for x in v]
    if not isinstance(v, dict):
        return v
    if "ref" in v:
        module, _, qual = v["ref"].partition(":")
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
        return obj
    raise StudyError(f"model kwarg {v['unloadable']} cannot be rebuilt from the stored description")


def build_info(ctx: TrialContext) -> dict[str, Any]:
    """How to rebuild the trained model: what `load_model` reads."""
    kwargs = {**ctx.candidate.kwargs, **ctx.config.model_kw}
    return {
        "model": ctx.candidate.model,
        "kwargs": {k: encode(v) for k, v in kwargs.items()},
        "in_chans": ctx.dls.input_shape[0],
        "num_classes": ctx.dls.n_classes,
    }


def save_model(
    study: optuna.Study, trial: optuna.Trial, model: nn.Module, ctx: TrialContext, run: TrackedRun, out: Path
) -> str:
    """Upload the final weights of a confirm run; the artifact id goes into the trial's `model_artifact` attr."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{slug(ctx.candidate.name)}-seed{ctx.seed}.pt"
        torch.save({"state_dict": state, "build": build_info(ctx)}, path)
        artifact_id = upload_artifact(artifact_store=artifact_store(out), file_path=str(path), study_or_trial=trial)
        meta = {"study": ctx.spec.name, "candidate": ctx.candidate.name, "seed": ctx.seed, "trial": trial.number}
        run.artifact(slug(f"{ctx.spec.name}-{ctx.candidate.name}-seed{ctx.seed}"), path, "model", meta)
    trial.set_user_attr(ATTR, artifact_id)
    return artifact_id


def load_model(
    source: str | Path,
    candidate: str,
    seed: int | None = None,
    *,
    study: str | None = None,
    artifacts: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The trained model of a confirm run: `seed`'s, or by default the seed with the best validation accuracy
    (choosing by test accuracy would leak the test set into the choice).

    `source` is a study's output directory (its journal and `artifacts/`), or a storage URL / journal path with
    `artifacts` naming the artifact directory. `study` is needed only when the storage holds several studies.
    The module comes back in eval mode, with `.slowai_run` = {study, candidate, seed, trial, test_accuracy}.
    """
    url, art_dir = _locate(Path(source) if not str(source).count("://") else source, artifacts)
    storage = st.open_storage(url)
    name = _study_name(storage, candidate, study)
    runs = confirmed_runs(storage, name, candidate)[1]
    if not runs:
        raise StudyError(f"{name}: no finished confirm run of {candidate!r} to load")
    if seed is None:
        run = max(runs, key=lambda t: (t.user_attrs.get("best_valid_accuracy") or 0.0, -t.user_attrs["seed"]))
    else:
        run = next((t for t in runs if t.user_attrs["seed"] == seed), None)
        if run is None:
            raise StudyError(
                f"{candidate!r} has no confirm run with seed {seed}; seeds: {[t.user_attrs['seed'] for t in runs]}"
            )
    if ATTR not in run.user_attrs:
        raise StudyError(
            f"confirm trial {run.number} of {candidate!r} has no saved model (run before models were kept)"
        )
    model = _read(FileSystemArtifactStore(art_dir), run.user_attrs[ATTR], art_dir).to(device).eval()
    keys = ("seed", "test_accuracy")
    model.slowai_run = {
        "study": name,
        "candidate": candidate,
        "trial": run.number,
        **{k: run.user_attrs.get(k) for k in keys},
    }
    return model


def _locate(source: str | Path, artifacts: str | Path | None) -> tuple[str, Path]:
    """(storage URL, artifact directory) from an output directory, a journal path or a URL."""
    if isinstance(source, Path) and source.is_dir():
        return str(st.default_storage_path(source)), Path(artifacts or source / ARTIFACT_DIR)
    if isinstance(source, Path):
        if not source.exists():
            raise StudyError(f"no study output or storage at {source}")
        return str(source), Path(artifacts or source.parent / ARTIFACT_DIR)
    if artifacts is None:
        raise StudyError("a storage URL needs artifacts=<the study's --out>/artifacts, where the weights are")
    return source, Path(artifacts)


def _study_name(storage: Any, candidate: str, study: str | None) -> str:
    names = sorted(
        n.removesuffix(f"/{candidate}/confirm")
        for n in st.existing_names(storage)
        if n.endswith(f"/{candidate}/confirm")
    )
    if study is not None:
        if study not in names:
            raise StudyError(f"no confirm runs of {candidate!r} in study {study!r}; studies with it: {names or 'none'}")
        return study
    if len(names) != 1:
        raise StudyError(
            f"{len(names)} studies have confirm runs of {candidate!r} ({', '.join(names) or 'none'}); pass study="
        )
    return names[0]


def _read(store: FileSystemArtifactStore, artifact_id: str, where: Path) -> nn.Module:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        try:
            download_artifact(artifact_store=store, artifact_id=artifact_id, file_path=str(path))
        except Exception as e:  # noqa: BLE001 - a missing file is the user's to fix: say where we looked
            raise StudyError(f"model artifact {artifact_id} not found in {where}: {type(e).__name__}") from None
        saved: Mapping[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    b = saved["build"]
    kwargs = {k: decode(v) for k, v in b["kwargs"].items()}
    model = create_model(b["model"], in_chans=b["in_chans"], num_classes=b["num_classes"], **kwargs)
    model.load_state_dict(saved["state_dict"])
    return model
