"""The Learner and its callbacks: event order, cancellation, ordering, schedules, metrics, stats, a real fit."""

from pathlib import Path

import matplotlib
import pytest
import torch
import torch.nn as nn

from slowai import (
    ActivationStatsCB,
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    DataLoaders,
    Learner,
    MetricsCB,
    MultiStepCB,
    OneCycleCB,
    ProgressCB,
    RecorderCB,
    create_model,
    evaluate,
    fashion_mnist,
    set_seed,
    train_1cycle,
)

matplotlib.use("Agg")
FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
EVENTS = [f"{when}_{what}" for what in ("fit", "epoch", "batch") for when in ("before", "after", "cleanup")] + [
    "after_predict",
    "after_loss",
    "after_backward",
    "after_step",
]


def toy_dls(n: int = 64, bs: int = 16, seed: int = 0) -> DataLoaders:
    """Two linearly separable blobs in 4-D: tiny, learnable, deterministic."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 4, 1, 1, generator=g) + (y.float() * 3 - 1.5).view(-1, 1, 1, 1)
    return DataLoaders.from_tensors(x, y, x[:32], y[:32], bs=bs, device="cpu", classes=["a", "b"])


def toy_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 2))


class Trace(Callback):
    """Record every event (and raise a cancel exception on a chosen one)."""

    def __init__(self, raise_on: str | None = None, exc: type[Exception] | None = None, order: int = 0) -> None:
        self.log: list[str] = []
        self.raise_on, self.exc, self.order = raise_on, exc, order
        for event in EVENTS:
            setattr(self, event, self._recorder(event))

    def _recorder(self, event: str):
        def record() -> None:
            self.log.append(event)
            if event == self.raise_on:
                raise self.exc()

        return record


def events_of(log: list[str], prefix: str) -> list[str]:
    return [e for e in log if e.endswith(prefix)]


def test_events_fire_in_order_for_one_training_batch():
    trace = Trace()
    learn = Learner(toy_model(), toy_dls(n=16, bs=16), cbs=[trace])
    learn.fit(1, valid=False)
    assert trace.log == [
        "before_fit",
        "before_epoch",
        "before_batch",
        "after_predict",
        "after_loss",
        "after_backward",
        "after_step",
        "after_batch",
        "cleanup_batch",
        "after_epoch",
        "cleanup_epoch",
        "after_fit",
        "cleanup_fit",
    ]


def test_validation_batches_skip_backward_and_step():
    trace = Trace()
    Learner(toy_model(), toy_dls(n=64, bs=16), cbs=[trace]).fit(1, train=False)
    assert "after_backward" not in trace.log and "after_step" not in trace.log
    assert trace.log.count("after_batch") == 2  # 32 validation items / bs 16


@pytest.mark.parametrize(
    "exc, raise_on, level, skipped",
    [
        (CancelBatchException, "after_predict", "batch", "after_loss"),
        (CancelEpochException, "before_epoch", "epoch", "before_batch"),
        (CancelFitException, "before_fit", "fit", "before_epoch"),
    ],
)
def test_cancel_skips_the_rest_of_its_level_but_runs_cleanup(exc, raise_on, level, skipped):
    trace = Trace(raise_on=raise_on, exc=exc)
    Learner(toy_model(), toy_dls(), cbs=[trace]).fit(1)
    assert skipped not in trace.log
    assert trace.log.count(f"after_{level}") == 0
    assert trace.log.count(f"cleanup_{level}") == trace.log.count(f"before_{level}") > 0


def test_cancel_batch_only_skips_that_batch():
    trace = Trace(raise_on="after_loss", exc=CancelBatchException)
    Learner(toy_model(), toy_dls(n=64, bs=16), cbs=[trace]).fit(1, valid=False)
    assert trace.log.count("before_batch") == 4
    assert trace.log.count("after_batch") == 0
    assert trace.log.count("cleanup_batch") == 4
    assert trace.log[-2:] == ["after_fit", "cleanup_fit"]


def test_other_errors_propagate_after_cleanup():
    trace = Trace(raise_on="after_step", exc=RuntimeError)
    with pytest.raises(RuntimeError):
        Learner(toy_model(), toy_dls(), cbs=[trace]).fit(1)
    assert trace.log[-3:] == ["cleanup_batch", "cleanup_epoch", "cleanup_fit"]


def test_callbacks_run_sorted_by_order_not_insertion():
    calls = []

    class Named(Callback):
        def __init__(self, name: str, order: int) -> None:
            self.label, self.order = name, order

        def before_fit(self) -> None:
            calls.append(self.label)

    Learner(toy_model(), toy_dls(), cbs=[Named("late", 5), Named("early", -5), Named("middle", 0)]).fit(1)
    assert calls == ["early", "middle", "late"]


def test_fit_callbacks_are_temporary_even_when_fit_fails():
    learn = Learner(toy_model(), toy_dls())
    before = list(learn.cbs)
    learn.fit(1, cbs=[Trace()])
    assert learn.cbs == before
    with pytest.raises(RuntimeError):
        learn.fit(1, cbs=[Trace(raise_on="before_batch", exc=RuntimeError)])
    assert learn.cbs == before


def test_fit_rejects_zero_epochs():
    with pytest.raises(ValueError, match="n_epochs"):
        Learner(toy_model(), toy_dls()).fit(0)


def test_one_cycle_lr_rises_to_max_then_anneals():
    rec = RecorderCB()
    learn = Learner(toy_model(), toy_dls(n=64, bs=4), lr=0.1, opt_func=torch.optim.AdamW, cbs=[OneCycleCB(), rec])
    learn.fit(2, valid=False)
    lrs = torch.tensor(rec.lrs)
    peak = int(lrs.argmax())
    assert len(lrs) == 32  # one entry per training batch
    assert lrs[peak] == pytest.approx(0.1, rel=0.01)
    assert 0.2 < peak / len(lrs) < 0.4  # pct_start=0.3
    assert (lrs[: peak + 1].diff() > 0).all() and (lrs[peak:].diff() < 0).all()
    assert lrs[0] == pytest.approx(0.1 / 25) and lrs[-1] < lrs[0]
    moms = torch.tensor(rec.moms)  # AdamW's beta1 cycles the other way
    assert moms[peak] == pytest.approx(0.85, rel=0.01) and moms[0] == pytest.approx(0.95)


def test_metrics_match_an_independent_evaluation():
    set_seed(0)
    dls = toy_dls()
    learn = Learner(toy_model(), dls, lr=0.1, cbs=[MetricsCB()])
    learn.fit(3)
    metrics = learn.cb(MetricsCB)
    assert [r["epoch"] for r in metrics.train_history] == [0, 1, 2]
    assert [r["epoch"] for r in metrics.valid_history] == [0, 1, 2]
    expected = evaluate(learn.model, dls.valid)
    assert metrics.valid_history[-1]["accuracy"] == pytest.approx(expected["accuracy"])
    assert metrics.valid_history[-1]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert metrics.valid_history[-1]["accuracy"] > 0.9  # separable blobs


def test_evaluate_says_which_items_it_got_right_in_the_same_pass():
    set_seed(0)
    dls = toy_dls()
    model = Learner(toy_model(), dls, lr=1e-3, cbs=[MetricsCB()]).fit(1).model  # barely trained: some wrong
    scores = evaluate(model, dls.valid, per_item=True)
    with torch.no_grad():
        model.eval()
        expected = torch.cat([model(xb).argmax(1) == yb for xb, yb in dls.valid])
    assert scores["correct"].dtype == torch.bool and torch.equal(scores["correct"], expected)
    assert 0 < scores["accuracy"] == expected.float().mean().item() < 1
    assert "correct" not in evaluate(model, dls.valid)


def test_same_seed_same_first_epoch_loss():
    def first_loss() -> float:
        set_seed(123)
        learn = Learner(toy_model(), toy_dls(), lr=0.05, cbs=[MetricsCB()])
        learn.fit(1)
        return learn.cb(MetricsCB).train_history[0]["loss"]

    assert first_loss() == first_loss()


def test_progress_cb_prints_the_metrics_table(capsys):
    Learner(toy_model(), toy_dls(), cbs=[MetricsCB(), ProgressCB(bars=False)]).fit(2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["accuracy", "loss", "epoch", "train"]
    assert [line.split()[2:] for line in lines[1:]] == [["0", "train"], ["0", "eval"], ["1", "train"], ["1", "eval"]]


def test_lr_find_stops_on_divergence_and_restores_weights():
    set_seed(0)
    learn = Learner(toy_model(), toy_dls(n=64, bs=4), opt_func=torch.optim.SGD)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    result = learn.lr_find(start_lr=1e-4, gamma=2.0, max_epochs=20)
    assert result.lrs[1] == pytest.approx(2 * result.lrs[0])
    assert result.losses[-1] > 3 * min(result.losses) or not torch.isfinite(torch.tensor(result.losses[-1]))
    assert len(result.lrs) < 20 * 16  # stopped before running out of epochs
    assert result.lrs[0] < result.suggestion < result.lrs[-1]
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    result.plot()


def test_activation_stats_record_every_layer_and_remove_hooks():
    model = create_model("conv")
    dls = DataLoaders.from_tensors(
        torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8),
        torch.randint(0, 10, (64,)),
        torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8),
        torch.randint(0, 10, (16,)),
        bs=16,
        device="cpu",
    )
    stats = ActivationStatsCB()
    Learner(model, dls, cbs=[stats]).fit(1)
    assert len(stats.names) == len(model.layers) == 6
    assert all(len(m) == 4 for m in stats.series("mean"))  # training batches only
    hists = stats.series("hist")
    assert hists[0].shape == (4, 40)
    # every activation lands in the histogram unless it is beyond hist_max
    n_acts = 16 * 8 * 28 * 28
    assert hists[0].sum(1).le(n_acts).all() and hists[0].sum(1).gt(0.9 * n_acts).all()
    frac = stats.near_zero_fraction()
    assert all(((f >= 0) & (f <= 1)).all() for f in frac)
    assert all(not m._forward_hooks for m in model.layers)
    stats.mean_std_plot(), stats.hist_plot(), stats.near_zero_plot()


@needs_fmnist
def test_train_1cycle_learns_fashion_mnist_slice():
    set_seed(42)
    dls = fashion_mnist(bs=256, subset=4000, device="cpu")
    learn = train_1cycle(create_model("residual"), dls, lr=1e-2, n_epochs=1, progress=False)
    valid = learn.cb(MetricsCB).valid_history[-1]
    assert valid["accuracy"] > 0.6  # chance is 0.1
    assert evaluate(learn.model, dls.test)["accuracy"] > 0.6


def test_multistep_divides_the_lr_at_60_and_85_percent():
    rec = RecorderCB()
    learn = Learner(toy_model(), toy_dls(n=64, bs=4), lr=0.1, cbs=[MultiStepCB(), rec])
    learn.fit(5, valid=False)  # 80 batches: milestones at batches 48 and 68
    lrs = torch.tensor(rec.lrs)
    assert lrs[:48].eq(0.1).all()
    assert lrs[48:68] == pytest.approx(torch.full((20,), 0.01))
    assert lrs[68:] == pytest.approx(torch.full((12,), 0.001))
