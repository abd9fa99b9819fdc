"""GPU speed-up callbacks: exact no-ops on the CPU by default, and real when forced."""

import pytest
import torch

from slowai import DataLoaders, Learner, MetricsCB, create_model, set_seed
from slowai.accel import ChannelsLastCB, CompileCB, MixedPrecisionCB, accel_cbs


def tiny_dls() -> DataLoaders:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    return DataLoaders.from_tensors(x, y, x[:32], y[:32], bs=32, device="cpu")


def losses(cbs) -> list[float]:
    set_seed(0)
    learn = Learner(create_model("conv"), tiny_dls(), lr=0.01, cbs=[MetricsCB(), *cbs])
    learn.fit(2)
    return [r["loss"] for r in learn.cb(MetricsCB).history]


def test_flags_on_cpu_change_nothing_and_warn():
    with pytest.warns(UserWarning, match="GPU speed-up"):
        accelerated = losses(accel_cbs(amp=True, channels_last=True, compile=True))
    assert accelerated == losses([])


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


def test_forced_channels_last_keeps_the_numbers():
    cl = losses([ChannelsLastCB(on_cpu=True)])
    assert cl == pytest.approx(losses([]), rel=1e-4)


def test_forced_compile_compiles_in_place():
    set_seed(0)
    model = create_model("conv")
    learn = Learner(model, tiny_dls(), cbs=[CompileCB(on_cpu=True, backend="eager")])
    learn.fit(1)
    assert learn.model is model and model._compiled_call_impl is not None
