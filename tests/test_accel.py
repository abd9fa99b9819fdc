"""Speed-up callbacks: compile and channels-last act on CPU and keep the numbers; bf16 stays a GPU-only no-op on CPU.

The compiled runs use real inductor (C++ kernels) on a tiny net: one cold compile, 15-45 s on 2 shared cores.
"""

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch._dynamo.utils import counters

from slowai import DataLoaders, Learner, MetricsCB, create_model, set_seed
from slowai.accel import (
    ChannelsLastCB,
    CompileCB,
    MixedPrecisionCB,
    accel_cbs,
    channels_last_pays,
    compile_pays,
    compiler_available,
    enable_compile_cache,
)

# Compiled vs eager losses: inductor fuses and reorders float32 arithmetic (BatchNorm statistics, the loss
# reduction), so they differ in the last bits; over 2 epochs that stays far below 1e-3 relative (measured ~1e-6).
COMPILED_REL_TOL = 1e-3
CACHE_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE")


class TinyNet(nn.Module):
    """Conv -> BatchNorm -> ReLU -> pool -> linear: train and eval differ (BatchNorm), and it compiles in seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def tiny_dls(n_train: int = 64, n_valid: int = 32) -> DataLoaders:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n_train,), generator=g)
    return DataLoaders.from_tensors(x, y, x[:n_valid], y[:n_valid], bs=32, device="cpu")


def train(cbs, model: str | type[nn.Module] = "conv", dls: DataLoaders | None = None) -> Learner:
    """Two epochs from seed 0: the same initial weights and batch order for every call with the same model."""
    set_seed(0)
    net = create_model(model) if isinstance(model, str) else model()
    return Learner(net, dls or tiny_dls(), lr=0.01, cbs=[MetricsCB(), *cbs]).fit(2)


def losses(cbs, model: str | type[nn.Module] = "conv", dls: DataLoaders | None = None) -> list[float]:
    return [r["loss"] for r in train(cbs, model, dls).cb(MetricsCB).history]


@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One real inductor compile of TinyNet (2 epochs, short last batches) into a fresh cache dir, then a rerun."""
    cache = tmp_path_factory.mktemp("inductor-cache")
    dls = tiny_dls(92, 60)  # batches of 32, 32, 28 (train) and 32, 28 (valid)
    with pytest.MonkeyPatch.context() as mp:
        for var in CACHE_ENV:  # enable_compile_cache sets these: give them back afterwards
            mp.setenv(var, "")
            mp.delenv(var)
        enable_compile_cache(cache)
        torch._dynamo.reset()
        run = {"cache": cache, "keys": list(TinyNet().state_dict())}
        graphs = counters["stats"]["unique_graphs"]
        learn = train([CompileCB()], TinyNet, dls)
        run["graphs"] = counters["stats"]["unique_graphs"] - graphs
        run["model"], run["compiled"] = learn.model, [r["loss"] for r in learn.cb(MetricsCB).history]
        train([CompileCB()], TinyNet, dls)  # a later trial in the same process: a new model of the same class
        run["graphs_again"] = counters["stats"]["unique_graphs"] - graphs - run["graphs"]
        torch._dynamo.reset()  # forget the compiled code in memory: only the disk cache can help the rerun
        hits = _cache_hits()
        run["rerun"] = losses([CompileCB()], TinyNet, dls)
        run["cache_hits"] = _cache_hits() - hits
        run["eager"] = losses([], TinyNet, dls)
        yield run
    torch._dynamo.reset()


def _cache_hits() -> int:
    return counters["inductor"]["fxgraph_cache_hit"] + counters["aot_autograd"]["autograd_cache_hit"]


def test_amp_on_cpu_changes_nothing_and_warns():
    with pytest.warns(UserWarning, match="MixedPrecisionCB does nothing on cpu: it is a GPU speed-up") as rec:
        amp = losses(accel_cbs(amp=True))
    assert len(rec) == 1
    assert amp == losses([])


def test_flags_act_on_cpu_and_only_amp_warns():
    model = create_model("conv")
    learn = Learner(model, tiny_dls(), cbs=accel_cbs(amp=True, channels_last=True, compile=True))
    with pytest.warns(UserWarning) as rec:
        learn.fit(1, train=False, valid=False)  # before_fit only: no batch, so nothing is compiled yet
    assert [str(w.message) for w in rec] == ["MixedPrecisionCB does nothing on cpu: it is a GPU speed-up"]
    assert learn.model is model and model._compiled_call_impl is not None
    assert model.layers[0].conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_compiled_training_matches_eager(compiled_run):
    assert compiled_run["compiled"] == pytest.approx(compiled_run["eager"], rel=COMPILED_REL_TOL)
    assert compiled_run["rerun"] == pytest.approx(compiled_run["compiled"], rel=COMPILED_REL_TOL)


def test_compile_is_in_place(compiled_run):
    model = compiled_run["model"]
    assert model._compiled_call_impl is not None
    assert list(model.state_dict()) == compiled_run["keys"]


def test_short_batches_and_eval_do_not_recompile(compiled_run):
    # 2 epochs x (train 32, 32, 28 + valid 32, 28): one graph for training, one for evaluation. (Inductor guards
    # its kernel choices on size ranges, here 169 * batch > 4096: a last batch under 25 would add one more graph.)
    assert compiled_run["graphs"] == 2
    assert compiled_run["graphs_again"] == 0  # and a new model of the same class reuses them: no compile at all


def test_compile_cache_is_populated_and_reused(compiled_run):
    cache = compiled_run["cache"]
    assert any((cache / "fxgraph").rglob("*")) and any((cache / "aotautograd").rglob("*"))
    assert compiled_run["cache_hits"] >= 2  # the rerun loaded its graphs from disk instead of compiling


def test_channels_last_keeps_the_numbers():
    assert losses([ChannelsLastCB()]) == pytest.approx(losses([]), rel=1e-4)


def test_no_cxx_compiler_trains_eagerly_with_one_warning():
    from torch._inductor import config
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    with config.patch({"cpp.cxx": (None, "/nonexistent/g++")}):  # inductor's own search list ($CXX sets it at import)
        with pytest.raises(InvalidCxxCompiler):
            get_cpp_compiler()  # what inductor itself would hit at the first compiled batch
        ok, detail = compiler_available()
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            learn = train([CompileCB()], TinyNet)
        assert not ok and "/nonexistent/g++ not on PATH" in detail
    msgs = [str(w.message) for w in rec]
    assert msgs == [f"torch.compile needs a C++ compiler on CPU (none found: {detail}); training eagerly"]
    assert learn.model._compiled_call_impl is None
    assert [r["loss"] for r in learn.cb(MetricsCB).history] == losses([], TinyNet)


def test_compiler_available_here():
    ok, detail = compiler_available()
    assert ok == (detail.startswith("/") and Path(detail).exists())


def test_forced_bf16_autocast_runs_the_forward_in_bf16():
    seen = []

    class Spy(MetricsCB):
        def after_predict(self) -> None:
            seen.append(self.learn.preds.dtype)

    set_seed(0)
    learn = Learner(create_model("conv"), tiny_dls(), cbs=[Spy(), MixedPrecisionCB(on_cpu=True)])
    learn.fit(1)
    assert set(seen) == {torch.bfloat16}
    assert not torch.is_autocast_enabled("cpu")  # switched off again after the loss
    assert torch.isfinite(torch.tensor(learn.cb(Spy).last["loss"]))


def test_opting_out_on_cpu_changes_nothing_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = losses([ChannelsLastCB(on_cpu=False), CompileCB(on_cpu=False)])
    assert got == losses([])


def test_compile_pays_only_when_the_saving_beats_the_compile_time():
    assert not compile_pays(14.0, "cpu", model="residual")  # one epoch of 10k images: never worth it
    assert not compile_pays(100.0, "cpu", model="residual") and compile_pays(
        100.0, "cpu", model="residual", warm_cache=True
    )
    assert compile_pays(3600.0, torch.device("cpu"), model="residual")
    assert not compile_pays(600.0, "cpu", model="timm/resnet18")  # compute-bound: compiling gains ~10%
    assert compile_pays(600.0, "cpu", model="conv") and not compile_pays(600.0, "cpu", model="unmeasured-net")


def test_channels_last_pays_for_conv_nets_on_cpu():
    assert channels_last_pays(create_model("residual"), "cpu")
    assert not channels_last_pays(nn.Linear(4, 2), "cpu")
