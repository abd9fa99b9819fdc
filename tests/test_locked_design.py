"""The sequential design is locked once a study starts: a resume that moves its looks or margin is refused.

Why: verdicts are taken at looks whose α was spent on a plan fixed before the first look. Re-running an undecided
study with more seeds, a later last look or a wider margin would test again on data already seen, and its promised
error rate would no longer hold. Growing `--trials` stays allowed (tuning reads validation data only)."""

from __future__ import annotations

import json
from dataclasses import asdict

import optuna
import pytest
from optuna.trial import TrialState

from slowai.study import Budget, StudySpec, main
from slowai.study.analysis import testset
from slowai.study.coordination.storage import open_storage
from slowai.study.planning import fingerprint
from slowai.study.spec import StudyError, optuna_name

STUDY = ["--dataset", "digits", "--candidates", "plain", "conv", "--wandb", "disabled", "--no-progress"]
TINY = ["--trials", "1", "--seeds", "3", "--epochs", "1", "--subset", "256", "--study-name", "locked"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny finished digits study: two candidates, one trial, three confirm seeds."""
    root = tmp_path_factory.mktemp("locked")
    argv = [*STUDY, *TINY, "--out", str(root / "out")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        assert main("digits", ["plain", "conv"], argv) == 0
    return root, argv


@pytest.mark.parametrize(
    "change, named",
    [
        (["--seeds", "6"], "budget.seeds 3 → 6"),
        (["--max-seeds", "20"], "budget.max_seeds 3 → 20"),
        (["--margin", "1.0"], "margin 0.003 → 0.01"),
    ],
)
def test_resuming_with_another_design_is_refused_and_writes_nothing(finished, capsys, monkeypatch, change, named):
    root, argv = finished
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    journal = root / "out" / "optuna.journal"
    before = journal.read_bytes()
    capsys.readouterr()
    assert main("digits", ["plain", "conv"], [*argv, *change]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert named in err and "new --study-name" in err, err
    assert journal.read_bytes() == before


def test_growing_trials_is_still_allowed(finished, capsys, monkeypatch):
    root, argv = finished
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    assert main("digits", ["plain", "conv"], [*argv, "--trials", "2", "--plan-only"]) == 0


def test_the_report_says_what_a_verdict_speaks_about(finished):
    """Every confirm run stored which test images it got right (a few dozen bytes here), so the intervals carry
    the test set's sampling error; the report says in one line what population the verdicts speak about, and
    verdicts.json gives P(better) with its interval beside Δ, and no seed count for an undecided comparison."""
    root, _ = finished
    out = root / "out"
    report = (out / "report.md").read_text()
    assert "- Population: a verdict speaks about" in report and "each drawing its own train/valid split" in report
    assert "P(better) (95% CI)" in report
    (conv,) = json.loads((out / "verdicts.json").read_text())["comparisons"]
    p, lo, hi = conv["p_improvement"]
    assert 0 <= lo <= p <= hi <= 1
    assert (conv["decided_at_seeds"] is None) == (conv["verdict"] == "inconclusive")
    excludes = conv["ci"][0] > 0 or conv["ci"][1] < 0
    assert excludes == (conv["verdict"] in ("better", "worse"))
    storage = open_storage(str(out / "optuna.journal"))
    for cand in ("plain", "conv"):
        confirm = optuna.load_study(study_name=optuna_name("locked", cand, "confirm"), storage=storage)
        done = [t.user_attrs for t in confirm.get_trials(states=(TrialState.COMPLETE,))]
        assert len(done) >= 3
        for a in done:  # the stored bits are the run's test accuracy, image by image
            right = testset.unpack(a[testset.ATTR], a["test_size"])
            assert len(a[testset.ATTR]) < 4096 and right.mean() == pytest.approx(a["test_accuracy"])


def test_a_fingerprint_stored_before_the_lock_is_read_with_its_own_seeds():
    """Fingerprints stored before seeds and α were locked lack them: they are filled in from the budget stored
    beside them (and α = 0.05, as every study then ran), so the same command resumes and other seeds are refused."""
    budget = Budget(seeds=3, max_seeds=10)
    old_budget = {k: v for k, v in budget.fingerprint().items() if k not in ("seeds", "max_seeds")}
    stored = {"plain": {"budget": asdict(budget), "fingerprint": {"budget": old_budget, "margin": 0.003}}}
    spec = StudySpec(name="old", candidates=["plain"], wandb="disabled")
    same = {"plain": {"budget": budget.fingerprint(), "margin": 0.003, "alpha": 0.05}}
    fingerprint.check(spec, stored, same)
    more = {"plain": {**same["plain"], "budget": budget.with_(seeds=5).fingerprint()}}
    with pytest.raises(StudyError, match=r"budget.seeds 3 → 5.*new --study-name"):
        fingerprint.check(spec, stored, more)
