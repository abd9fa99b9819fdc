"""Optimizers and lr schedules by name: the built-ins, extending the registries, and checking a space's values early."""

from functools import partial

import pytest
import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR, OneCycleLR

from slowai.callbacks import MultiStepCB as ReexportedMultiStepCB
from slowai.callbacks import RecorderCB
from slowai.data import DataLoaders
from slowai.learner import Learner
from slowai.optim import create_optimizer, list_optimizers, optimizer_options, register_optimizer
from slowai.schedules import (
    ConstantCB,
    CosineCB,
    MultiStepCB,
    OneCycleCB,
    ScheduleCB,
    check_schedule,
    create_schedule,
    list_schedules,
    register_schedule,
    schedule_options,
)
from slowai.train import RECIPES, Recipe, recipe, register_recipe

BUILT_IN_OPTIMIZERS = ["adam", "adamw", "rmsprop", "sgd"]


def params() -> list[nn.Parameter]:
    return [nn.Parameter(torch.zeros(3))]


def tiny_dls(n: int = 64, bs: int = 4) -> DataLoaders:
    """Two separable blobs of 4-feature 'images': n/bs training batches per epoch, in milliseconds."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 4, 1, 1, generator=g) + (y.float() * 3 - 1.5).view(-1, 1, 1, 1)
    return DataLoaders.from_tensors(x, y, x[:32], y[:32], bs=bs, device="cpu")


def recorded_lrs(schedule: ScheduleCB, lr: float = 0.1, n_epochs: int = 2, opt: str = "sgd") -> list[float]:
    """The lr of every training batch of a real fit (16 batches per epoch) under `schedule`."""
    rec = RecorderCB()
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    learn = Learner(model, tiny_dls(), lr=lr, opt_func=partial(create_optimizer, opt), cbs=[schedule, rec])
    learn.fit(n_epochs, valid=False)
    return rec.lrs


def torch_lrs(make: type[LRScheduler], steps: int, lr: float = 0.1, **kw) -> list[float]:
    """The same schedule driven by torch directly: the lr before each of `steps` optimizer steps."""
    opt = torch.optim.SGD(params(), lr=lr, momentum=0.9)
    sched, lrs = make(opt, **kw), []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


# ------------------------------------------------------------------ optimizers


@pytest.mark.parametrize(
    "name, cls, defaults",
    [
        ("adamw", torch.optim.AdamW, {"weight_decay": 0.01, "betas": (0.9, 0.999)}),
        ("adam", torch.optim.Adam, {"weight_decay": 0, "betas": (0.9, 0.999)}),
        ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": False, "weight_decay": 0}),
        ("rmsprop", torch.optim.RMSprop, {"momentum": 0, "alpha": 0.99}),
    ],
)
def test_built_in_optimizers_by_name_with_their_defaults(name, cls, defaults):
    opt = create_optimizer(name, params(), lr=0.05)
    assert type(opt) is cls and opt.defaults["lr"] == 0.05
    assert {k: opt.defaults[k] for k in defaults} == defaults
    assert name in list_optimizers() and list_optimizers()[name]  # every built-in has a description


def test_keywords_reach_torch_and_options_list_the_torch_class_keywords():
    opt = create_optimizer("sgd", params(), lr=0.1, nesterov=True, weight_decay=1e-4)
    assert opt.defaults["nesterov"] and opt.defaults["weight_decay"] == 1e-4
    assert {"momentum", "nesterov", "dampening", "weight_decay"} <= set(optimizer_options("sgd"))
    assert {"betas", "eps", "weight_decay"} <= set(optimizer_options("adamw"))
    assert not {"params", "lr"} & set(optimizer_options("adamw"))  # lr is its own search-space key


def test_unknown_optimizer_names_the_registered_ones():
    with pytest.raises(ValueError) as err:
        create_optimizer("lion", params(), lr=0.1)
    assert str(err.value) == f"unknown optimizer 'lion'; registered: {', '.join(list_optimizers())}"
    assert all(name in str(err.value) for name in BUILT_IN_OPTIMIZERS)


def test_unknown_keyword_is_rejected_before_torch_with_the_valid_ones():
    with pytest.raises(ValueError) as err:
        create_optimizer("sgd", params(), lr=0.1, betas=(0.9, 0.99))
    assert str(err.value) == f"optimizer 'sgd' has no option 'betas'; valid: {', '.join(optimizer_options('sgd'))}"


@register_optimizer("any_adam")
def any_adam(params, lr: float, **kw) -> torch.optim.Optimizer:
    """Adam forwarding any keyword (a user's factory whose return type names no specific class)."""
    return torch.optim.Adam(params, lr=lr, **kw)


def test_a_factory_forwarding_kw_to_an_unnamed_class_leaves_its_keywords_to_torch():
    assert optimizer_options("any_adam") == []  # annotate `-> torch.optim.Adam` to have them listed and checked
    assert create_optimizer("any_adam", params(), lr=0.1, amsgrad=True).defaults["amsgrad"]
    with pytest.raises(TypeError):
        create_optimizer("any_adam", params(), lr=0.1, momentum=0.9)


# ------------------------------------------------------------------ a user's optimizer and schedule


@register_optimizer("plain_sgd")
def plain_sgd(params, lr: float, weight_decay: float = 0.0) -> torch.optim.SGD:
    """SGD without momentum (a user's optimizer)."""
    return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=weight_decay)


@register_schedule("halfway")
class HalfwayCB(ScheduleCB):
    """Multiply the lr by `factor` once, halfway through the fit (a user's schedule)."""

    def __init__(self, factor: float = 0.5) -> None:
        self.factor = factor

    def make(self, opt: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        return MultiStepLR(opt, milestones=[total_steps // 2], gamma=self.factor)


def test_user_registered_optimizer_and_schedule_train_a_learner_by_name():
    assert list_optimizers()["plain_sgd"] == "SGD without momentum (a user's optimizer)."
    assert optimizer_options("plain_sgd") == ["weight_decay"] and schedule_options("halfway") == ["factor"]
    rec = RecorderCB()
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    opt_func = partial(create_optimizer, "plain_sgd", weight_decay=1e-4)
    learn = Learner(
        model, tiny_dls(bs=16), lr=0.1, opt_func=opt_func, cbs=[create_schedule("halfway", factor=0.1), rec]
    )
    learn.fit(1)
    assert type(learn.opt) is torch.optim.SGD and learn.opt.defaults["momentum"] == 0.0
    assert rec.lrs == pytest.approx([0.1, 0.1, 0.01, 0.01])  # 4 batches, ×0.1 at the second half
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_a_recipe_names_an_optimizer_and_a_schedule():
    register_recipe("sgd_cosine", Recipe("sgd", {"nesterov": True}, "cosine", {"warmup": 0.1}))
    opt_func, schedule = recipe("sgd_cosine", weight_decay=1e-3)
    opt = opt_func(params(), lr=0.1)
    assert opt.defaults["nesterov"] and opt.defaults["weight_decay"] == 1e-3 and opt.defaults["momentum"] == 0.9
    assert isinstance(schedule, CosineCB) and schedule.warmup == 0.1
    assert RECIPES["onecycle"] == Recipe("adamw", {"weight_decay": 0.01}, "onecycle", {})
    with pytest.raises(ValueError, match="warmup"):  # checked when registered, not at the first trial
        register_recipe("broken", Recipe("sgd", {}, "cosine", {"warmup": 2.0}))


# ------------------------------------------------------------------ schedules


def test_built_in_schedules_are_registered_and_build_their_callbacks():
    assert {"onecycle", "multistep", "cosine", "constant"} <= set(list_schedules())
    assert isinstance(create_schedule("onecycle"), OneCycleCB) and ReexportedMultiStepCB is MultiStepCB
    assert schedule_options("cosine") == ["final_div", "warmup"]
    assert {"max_lr", "pct_start", "div_factor", "anneal_strategy", "three_phase"} <= set(schedule_options("onecycle"))


def test_cosine_warms_up_linearly_peaks_at_lr_and_ends_at_lr_over_final_div():
    lrs = torch.tensor(recorded_lrs(CosineCB(warmup=0.25, final_div=100)))  # 32 batches: 8 of warm-up
    assert len(lrs) == 32 and int(lrs.argmax()) == 8
    assert lrs[:9] == pytest.approx(0.1 * torch.arange(1, 10) / 9)  # linear, no batch at lr 0
    assert lrs[8] == pytest.approx(0.1) and (lrs[8:].diff() < 0).all()
    assert lrs[-1] == pytest.approx(0.1 / 100)


def test_cosine_without_warmup_starts_at_the_peak():
    lrs = recorded_lrs(CosineCB(final_div=10))
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.01)


def test_constant_is_flat_after_warmup():
    lrs = torch.tensor(recorded_lrs(ConstantCB(warmup=0.25)))
    assert (lrs[:9].diff() > 0).all() and lrs[8:].eq(0.1).all()
    assert recorded_lrs(ConstantCB()) == [0.1] * 32


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0, "anneal_strategy": "linear"},
        {"three_phase": True},
    ],
)
def test_one_cycle_gives_torch_one_cycle_lrs(kw):
    expected = torch_lrs(OneCycleLR, 32, max_lr=0.1, total_steps=32, **kw)
    assert recorded_lrs(OneCycleCB(**kw), opt="adamw") == expected
    assert recorded_lrs(OneCycleCB(max_lr=0.1, **kw), lr=1.0) == expected  # an explicit max_lr beats the Learner's lr


@pytest.mark.parametrize("milestones, gamma, steps", [((0.6, 0.85), 0.1, [19, 27]), ((0.5,), 0.5, [16])])
def test_multistep_gives_torch_multistep_lrs(milestones, gamma, steps):
    expected = torch_lrs(MultiStepLR, 32, milestones=steps, gamma=gamma)
    assert recorded_lrs(MultiStepCB(milestones, gamma)) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["onecycle", "multistep", "cosine", "constant", "halfway"])
def test_check_schedule_accepts_every_registered_schedule_with_its_defaults(name):
    check_schedule(name, {}, lr=0.05)


@pytest.mark.parametrize(
    "name, kw, says",
    [
        ("cosine", {"warmup": 1.0}, "warmup is a fraction of training in [0, 1), got 1.0"),
        ("constant", {"warmup": -0.1}, "warmup is a fraction of training in [0, 1)"),
        ("cosine", {"final_div": 0.5}, "final_div must be >= 1"),
        ("multistep", {"milestones": (0.5, 1.2)}, "milestones are fractions of training in (0, 1)"),
        ("multistep", {"gamma": 0.0}, "gamma must be > 0"),
        ("onecycle", {"pct_start": 1.5}, "pct_start"),
        ("onecycle", {"anneal_strategy": "cubic"}, "anneal_strategy"),
        ("constant", {"warmup": "0.1"}, "schedule 'constant'"),  # a wrong type is a bad value too
        ("cosine", {"warmpu": 0.1}, "schedule 'cosine' has no option 'warmpu'; valid: final_div, warmup"),
        ("linear", {}, "unknown schedule 'linear'; registered: "),
    ],
)
def test_check_schedule_rejects_bad_names_keys_and_values_in_one_line(name, kw, says):
    with pytest.raises(ValueError) as err:
        check_schedule(name, kw)
    assert says in str(err.value) and "\n" not in str(err.value)
