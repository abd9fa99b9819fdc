"""Fused multi-seed training: member k of a fused run is the unfused run of seed k, step for step.

Every equivalence test trains K seeds fused and each seed alone (same init via `set_seed`, same batches via the
training loader's `reseed`) on 8×8 digits on the CPU, then compares each member's weights, BatchNorm statistics and
per-step losses with its own run. The 20-step trajectories run in float64, where fused and unfused agree to 1e-9:
in float32 two *unfused* runs of one seed already part after a few steps when only the summation order changes
(`plain`, 20 steps at lr 0.002, contiguous vs channels-last weights: 0.13 apart in loss on this CPU; digits' tied
pixel values put many pre-activations at one value, on a ReLU kink). The float32 test therefore compares one step.
"""

from functools import partial

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from slowai import (
    Callback,
    CancelFitException,
    DeviceCB,
    FusedMetricsCB,
    FusedTrainCB,
    FusionError,
    Learner,
    create_model,
    create_schedule,
    digits,
    evaluate,
    fit_fused,
    fuse_models,
    fused_learner,
    measure_fusion,
    schedule_trace,
    set_seed,
)

STEPS = 20
SEEDS = (0, 1, 2)
SGD = partial(torch.optim.SGD, momentum=0.9)
SMALL_RESNET = {"c_hidden": (4, 8, 16), "num_blocks": (1, 1, 1)}


@pytest.fixture(scope="module")
def dls():
    return digits(bs=16, device="cpu")


def factory(name: str, **kw):
    return partial(create_model, name, in_chans=1, num_classes=10, **kw)


class StopAfter(Callback):
    """End the fit after `n` training steps, keeping each step's loss (the fused run's (K,) losses) on the device."""

    def __init__(self, n: int) -> None:
        self.n, self.losses = n, []

    def after_loss(self) -> None:
        if self.learn.training:
            self.losses.append(getattr(self.learn, "member_loss", self.learn.loss).detach().clone())

    def after_step(self) -> None:
        if len(self.losses) == self.n:
            raise CancelFitException()


class Float64CB(Callback):
    """Batches in float64 (the loaders give float32), for models built in float64."""

    order = DeviceCB.order + 1

    def before_batch(self) -> None:
        x, y = self.learn.batch
        self.learn.batch = (x.double(), y)


def in_float64(make):
    return lambda: make().double()


def solo_run(make, seed, dls, lr=0.05, opt_func=SGD, label_smoothing=0.0, steps=STEPS, float64=True, cbs=()):
    """The unfused reference: seed `seed`'s model and batch order, trained alone."""
    set_seed(seed)
    model = in_float64(make)() if float64 else make()
    cbs = [Float64CB(), *cbs] if float64 else list(cbs)
    stop = StopAfter(steps)
    loss = partial(F.cross_entropy, label_smoothing=label_smoothing)
    dls.train.reseed(seed)
    try:
        Learner(model, dls, loss, lr=lr, opt_func=opt_func, cbs=[DeviceCB("cpu"), stop, *cbs]).fit(1, valid=False)
    finally:
        dls.train.reseed(None)  # the loaders are shared by the whole module
    return model, torch.stack(stop.losses)


def fused_run(make, seeds, dls, steps=STEPS, cbs=(), lr=0.05, opt_func=SGD, float64=True, **kw):
    stop = StopAfter(steps)
    cbs = [stop, Float64CB(), *cbs] if float64 else [stop, *cbs]
    make = in_float64(make) if float64 else make
    learn = fit_fused(make, seeds, dls, lr, n_epochs=1, opt_func=opt_func, cbs=cbs, **kw)
    return learn, torch.stack(stop.losses, 1)  # (K, steps)


def assert_same_model(member: nn.Module, solo: nn.Module, tol: float = 1e-9, counters: bool = True) -> None:
    for (name, got), want in zip(member.state_dict().items(), solo.state_dict().values()):
        if not counters and name.endswith("num_batches_tracked"):
            continue
        scale = max(float(want.abs().max()), 1.0) if want.is_floating_point() else 1.0
        torch.testing.assert_close(got, want, rtol=0, atol=tol * scale, msg=lambda m, n=name: f"{n}: {m}")


def assert_same_runs(learn, losses, runs, tol: float = 1e-9) -> None:
    """Member k's per-step losses and final state are run k's (`runs`: (model, losses) per member)."""
    for k, (solo, solo_losses) in enumerate(runs):
        torch.testing.assert_close(losses[k], solo_losses, rtol=0, atol=tol)
        assert_same_model(learn.model.member(k), solo, tol)


ARCHITECTURES = pytest.mark.parametrize(
    "name, seeds",
    [
        ("conv", SEEDS),
        ("plain", SEEDS),
        ("residual", SEEDS),
        ("resnet_tutorial", SEEDS),
        ("preact_resnet_tutorial", SEEDS),
        ("timm/resnet18", (0, 1)),  # 11M parameters a member: two members (and 5 float64 steps) keep the file fast
    ],
)


@ARCHITECTURES
def test_member_k_is_the_unfused_run_of_seed_k_for_20_steps(dls, name, seeds):
    steps = 5 if name.startswith("timm/") else STEPS
    learn, losses = fused_run(factory(name), seeds, dls, steps=steps)
    assert_same_runs(learn, losses, [solo_run(factory(name), seed, dls, steps=steps) for seed in seeds])


@ARCHITECTURES
def test_in_float32_a_fused_step_is_each_members_step(dls, name, seeds):
    learn, losses = fused_run(factory(name), seeds, dls, steps=1, float64=False)
    runs = [solo_run(factory(name), seed, dls, steps=1, float64=False) for seed in seeds]
    assert_same_runs(learn, losses, runs, tol=1e-5)


def test_per_member_lr_weight_decay_and_label_smoothing_are_each_members_own(dls):
    lrs, wds, smoothing = [1e-2, 3e-3], [0.0, 0.1], [0.0, 0.2]
    make, adamw = factory("resnet_tutorial", **SMALL_RESNET), torch.optim.AdamW
    learn, losses = fused_run(make, SEEDS[:2], dls, lr=lrs, opt_func=adamw, weight_decay=wds, label_smoothing=smoothing)
    runs = [
        solo_run(make, s, dls, lr, partial(adamw, weight_decay=wd), ls)
        for s, lr, wd, ls in zip(SEEDS, lrs, wds, smoothing)
    ]
    assert_same_runs(learn, losses, runs)


def test_per_member_weight_decay_with_sgd_goes_into_the_gradient(dls):
    make, lrs, wds = factory("residual", width=4), [0.05, 0.02], [1e-3, 0.1]
    learn, losses = fused_run(make, SEEDS[:2], dls, lr=lrs, weight_decay=wds)
    assert_same_runs(
        learn, losses, [solo_run(make, s, dls, lr, partial(SGD, weight_decay=wd)) for s, lr, wd in zip(SEEDS, lrs, wds)]
    )


def test_per_member_schedules_give_each_member_its_own_warm_up_decay_and_peak(dls):
    make, lrs = factory("residual", width=4), [0.05, 0.02, 0.08]
    scheds = [("cosine", {"warmup": 0.1}), ("cosine", {"warmup": 0.25, "final_div": 10}), ("constant", {"warmup": 0.2})]
    learn, losses = fused_run(make, SEEDS, dls, lr=lrs, schedules=[create_schedule(n, **kw) for n, kw in scheds])
    solo = [solo_run(make, s, dls, lr, cbs=[create_schedule(n, **kw)]) for s, lr, (n, kw) in zip(SEEDS, lrs, scheds)]
    assert_same_runs(learn, losses, solo)


def test_one_cycle_members_fuse_when_their_momentum_cycles_agree(dls):
    make, adamw, lrs = factory("conv", width=4), torch.optim.AdamW, [3e-3, 1e-2]
    scheds = [create_schedule("onecycle", div_factor=d) for d in (25.0, 5.0)]  # the lr alone differs
    learn, losses = fused_run(make, SEEDS[:2], dls, lr=lrs, opt_func=adamw, schedules=scheds)
    solo = [
        solo_run(make, s, dls, lr, adamw, cbs=[create_schedule("onecycle", div_factor=d)])
        for s, lr, d in zip(SEEDS, lrs, (25.0, 5.0))
    ]
    assert_same_runs(learn, losses, solo)


def test_schedules_that_move_the_momentum_differently_do_not_share_one_optimizer(dls):
    early, late = create_schedule("onecycle", pct_start=0.1), create_schedule("onecycle", pct_start=0.4)
    warm_a, warm_b = create_schedule("cosine", warmup=0.1), create_schedule("cosine", warmup=0.3)
    assert schedule_trace(warm_a, SGD, 0.1, 50) == schedule_trace(warm_b, SGD, 0.01, 50)  # only the lr differs
    assert schedule_trace(early, SGD, 0.1, 50) != schedule_trace(late, SGD, 0.1, 50)
    with pytest.raises(ValueError, match="differ in more than the lr"):
        fused_run(factory("conv", width=4), SEEDS[:2], dls, lr=[0.1, 0.1], schedules=[early, late])


class StopMember(Callback):
    def __init__(self, k: int, after: int) -> None:
        self.k, self.after = k, after

    def after_step(self) -> None:
        if self.learn.iter + 1 == self.after:
            self.learn.cb(FusedTrainCB).stop(self.k, "pruned")


def test_a_stopped_member_keeps_its_weights_and_batchnorm_statistics_while_the_others_train(dls):
    make = factory("residual", width=4)
    learn, _ = fused_run(make, SEEDS[:2], dls, cbs=[StopMember(1, after=5)])
    assert learn.cb(FusedTrainCB).stopped == {1: "pruned"}
    # BatchNorm's num_batches_tracked is one counter for all members: it counts the fused run's 20 steps
    assert_same_model(learn.model.member(1), solo_run(make, SEEDS[1], dls, steps=5)[0], counters=False)
    assert_same_model(learn.model.member(0), solo_run(make, SEEDS[0], dls)[0])


def test_a_diverged_member_stops_at_the_epoch_end_without_touching_the_others(dls):
    make = factory("residual", width=4)
    models = []
    for seed in SEEDS[:2]:
        set_seed(seed)
        models.append(make().double())
    fused = fuse_models(models, dls.train.one_batch()[0][:8])
    with torch.no_grad():  # member 1's first weight becomes infinite, as a too-high lr would make it: NaN losses
        fused.body.layers[0].conv_a.conv.weight.unflatten(0, (2, -1))[1, 0, 0, 0, 0] = float("inf")
    learn = fused_learner(fused, dls, SEEDS[:2], lr=0.05, opt_func=SGD, cbs=[Float64CB()]).fit(1)
    assert learn.cb(FusedTrainCB).stopped == {1: "diverged: non-finite train loss in epoch 1"}
    assert [[r["train"] for r in rows] for rows in learn.cb(FusedMetricsCB).history] == [["train", "eval"]] * 2
    assert_same_model(learn.model.member(0), solo_run(make, SEEDS[0], dls, steps=len(dls.train))[0])


def test_per_member_validation_metrics_are_each_members_own_evaluation(dls):
    learn = fit_fused(factory("conv", width=4), SEEDS, dls, lr=0.05, n_epochs=1, opt_func=SGD)
    for k, rows in enumerate(learn.cb(FusedMetricsCB).history):
        alone = evaluate(learn.model.member(k), dls.valid)
        assert [r["train"] for r in rows] == ["train", "eval"]
        assert rows[1]["accuracy"] == pytest.approx(alone["accuracy"], abs=1e-9)
        assert rows[1]["loss"] == pytest.approx(alone["loss"], rel=1e-4)


def test_layers_that_cannot_fuse_are_named(dls):
    x = torch.randn(4, 1, 8, 8)
    with pytest.raises(FusionError, match=r"'blocks\.0\.block\.0' \(DenseLayer\).*train this model unfused"):
        fuse_models([create_model("densenet_tutorial", in_chans=1) for _ in SEEDS[:2]], x)
    with_ln = [nn.Sequential(nn.Flatten(), nn.LayerNorm(64), nn.Linear(64, 10)) for _ in SEEDS[:2]]
    with pytest.raises(FusionError, match=r"'1' \(LayerNorm\)"):
        fuse_models(with_ln, x)
    with pytest.raises(FusionError, match="member 1 is not the same architecture"):
        fuse_models([create_model("conv", in_chans=1, width=w) for w in (4, 8)], x)


def test_forward_takes_a_list_or_a_stack_of_member_batches():
    models = [nn.Sequential(nn.Flatten(), nn.Linear(64, 10)) for _ in SEEDS]
    fused = fuse_models(models, torch.randn(4, 1, 8, 8))
    xs = [torch.randn(5, 1, 8, 8) for _ in SEEDS]
    out = fused(xs)
    assert out.shape == (3, 5, 10)
    torch.testing.assert_close(out, torch.stack([m(x) for m, x in zip(models, xs)]))
    with pytest.raises(ValueError, match=r"need \(K=3, B, \.\.\.\) inputs"):
        fused(torch.randn(2, 5, 1, 8, 8))


def test_measure_fusion_times_both_ways_and_refuses_what_cannot_fuse():
    m = measure_fusion(factory("conv", width=4), k=2, input_shape=(1, 8, 8), bs=16, steps=2, rounds=1)
    assert m.k == 2 and m.fused_s > 0 and m.sequential_s > 0
    assert m.speedup == pytest.approx(m.sequential_s / m.fused_s)
    with pytest.raises(FusionError, match="DenseLayer"):  # the planner's cue to run this candidate unfused
        measure_fusion(factory("densenet_tutorial"), k=2, input_shape=(1, 8, 8), bs=4, steps=1, rounds=1)


def test_a_channels_last_fused_model_computes_the_same_and_trains_its_members_in_nhwc(dls):
    models = [factory("residual")() for _ in SEEDS]
    xs = torch.stack([dls.train.one_batch()[0]] * len(SEEDS))
    fused = fuse_models(models, xs[0, :8]).train()
    before = fused(xs)
    fused.to_channels_last()
    torch.testing.assert_close(fused(xs), before, rtol=1e-4, atol=1e-5)
    conv = next(m for m in fused.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    member = fused.member(1)  # an ordinary model again, in the default layout
    assert next(m for m in member.modules() if isinstance(m, nn.Conv2d)).weight.is_contiguous()
    m = measure_fusion(
        factory("conv", width=4), k=2, input_shape=(1, 8, 8), bs=16, steps=1, rounds=1, channels_last=True
    )
    assert m.fused_s > 0 and m.sequential_s > 0
