"""Named training recipes: the tutorial's optimizers and schedules, and the CIFAR-10 study's arms built from them."""

import torch

from slowai.callbacks import MultiStepCB, OneCycleCB
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
    for model, (tutorial_recipe, _lr) in TUTORIAL.items():
        assert {(model, tutorial_recipe), (model, "onecycle")} <= arms
    resnet = next(c for c in CANDIDATES if c.name == "resnet_tutorial-tutorial")
    assert resnet.space(None) == {"lr": 0.1, "weight_decay": 1e-4}
