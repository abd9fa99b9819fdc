"""Named training recipes: the tutorial's optimizers and schedules, and the CIFAR-10 study's arms built from them."""

import json

import pytest
import torch

from slowai.callbacks import MultiStepCB, OneCycleCB
from slowai.study import main
from slowai.train import recipe
from studies.cifar10_architectures import CANDIDATES, TUTORIAL


def test_tutorial_sgd_is_momentum_sgd_with_multistep_decay():
    opt_func, schedule = recipe("tutorial_sgd")
    opt = opt_func([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert isinstance(opt, torch.optim.SGD) and isinstance(schedule, MultiStepCB)
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 1e-4


def test_weight_decay_from_the_search_space_overrides_the_recipe_default():
    opt_func, schedule = recipe("onecycle", weight_decay=0.3)
    opt = opt_func([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    assert isinstance(opt, torch.optim.AdamW) and isinstance(schedule, OneCycleCB)
    assert opt.defaults["weight_decay"] == 0.3


def test_cifar10_study_pairs_every_tutorial_model_with_both_recipes():
    arms = {(c.model, c.recipe) for c in CANDIDATES}
    assert len(CANDIDATES) == 8
    for model, (tutorial_recipe, _lr, _published) in TUTORIAL.items():
        assert {(model, tutorial_recipe), (model, "onecycle")} <= arms
    resnet = next(c for c in CANDIDATES if c.name == "resnet_tutorial-tutorial")
    assert resnet.space(None) == {"lr": 0.1, "weight_decay": 1e-4}
    assert resnet.published == {"valid": 0.9184, "test": 0.91}  # the tutorial's table; onecycle arms have none
    assert all((c.published is None) == (c.recipe == "onecycle") for c in CANDIDATES)


@pytest.mark.slow
def test_cifar10_study_reports_the_tutorial_table_and_which_copy_was_used(tmp_path, capsys, cifar_root):
    arms = ["resnet_tutorial-tutorial", "resnet_tutorial-onecycle"]
    argv = ["--candidates", *arms, "--quick", "--out", str(tmp_path), "--data-root", str(cifar_root)]
    argv += ["--wandb", "disabled", "--no-progress"]
    assert main("cifar10_architectures", CANDIDATES, ["--dataset", "cifar10", "--trials", "1", *argv]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| published valid / test % |" in report and "| 91.84 / 91.00 |" in report
    assert "90% of the images JPEG-decoded" in report and "`resnet_tutorial-tutorial` " in report
    assert "| lr=0.1, weight_decay=0.0001 | 91.84 / 91.00 |" in report  # the fixed recipe shows as its best hp
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {r["candidate"] for r in rows} == set(arms) and all(r["data_source"].endswith(".npz") for r in rows)
    assert "resnet_tutorial-tutorial" in capsys.readouterr().out
