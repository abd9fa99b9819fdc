"""K copies of one architecture as one wider module (horizontal fusion): K seeds for about the dispatch cost of one.

Why: small nets are dispatch-bound, so K members computed side by side in one grouped op per layer cost far less
than K runs. Each member's channels sit in one contiguous slice of the channel axis, layout (B, K·C, ...): Conv →
grouped conv (groups × K), BatchNorm → one BatchNorm over K·C channels (per-channel statistics, so each member's are
exact), Linear → one batched matmul over a (K, out, in) weight; parameter-free layers (activations, pooling,
flatten, residual adds) act on each member's slice unchanged. Every fused tensor is the members' tensors
concatenated along dim 0, so fusing and splitting are one `cat` and one `unflatten` per state-dict entry.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.utils import skip_init

from slowai.utils import set_seed

__all__ = ["FusedLinear", "FusedModel", "FusionError", "fuse_models", "fuse_seeds"]


class FusionError(ValueError):
    """A model that cannot be fused, naming the layer (module path and type) so the caller can run it unfused."""


class FusedLinear(nn.Module):
    """K Linear layers as one batched matmul on (..., K·in) inputs; weight stored (K·out, in) like the others."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool = True, **factory: object) -> None:
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k * out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(k * out_features, **factory)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.view(self.k, self.out_features, self.in_features)
        y = torch.einsum("...ki,koi->...ko", x.unflatten(-1, (self.k, self.in_features)), w)
        if self.bias is not None:
            y = y + self.bias.view(self.k, self.out_features)
        return y.flatten(-2)

    def extra_repr(self) -> str:
        return f"k={self.k}, in_features={self.in_features}, out_features={self.out_features}"


def _device_dtype(m: nn.Module) -> dict[str, object]:
    t = next(iter([*m.parameters(recurse=False), *m.buffers(recurse=False)]), None)
    return {} if t is None else {"device": t.device, "dtype": t.dtype if t.is_floating_point() else None}


def _fused_conv(m: nn.Module, k: int) -> nn.Module:
    return skip_init(
        type(m), m.in_channels * k, m.out_channels * k, m.kernel_size, stride=m.stride, padding=m.padding,
        dilation=m.dilation, groups=m.groups * k, bias=m.bias is not None, padding_mode=m.padding_mode,
        **_device_dtype(m),
    )  # fmt: skip


def _fused_norm(m: nn.Module, k: int) -> nn.Module:
    kw = dict(eps=m.eps, momentum=m.momentum, affine=m.affine, track_running_stats=m.track_running_stats)
    return type(m)(m.num_features * k, **kw, **_device_dtype(m))


def _fused_linear(m: nn.Module, k: int) -> nn.Module:
    return FusedLinear(k, m.in_features, m.out_features, bias=m.bias is not None, **_device_dtype(m))


# Exact types only: a subclass (timm's Conv2dSame, a custom norm) may compute something else in its forward.
FUSERS: dict[type[nn.Module], Callable[[nn.Module, int], nn.Module]] = {
    nn.Conv1d: _fused_conv,
    nn.Conv2d: _fused_conv,
    nn.Conv3d: _fused_conv,
    nn.BatchNorm1d: _fused_norm,
    nn.BatchNorm2d: _fused_norm,
    nn.BatchNorm3d: _fused_norm,
    nn.Linear: _fused_linear,
}


def _holds_state(m: nn.Module) -> bool:
    return any(v is not None for v in (*m._parameters.values(), *m._buffers.values()))


def _fuse_layers(body: nn.Module, k: int) -> None:
    """Swap every fusable layer of `body` for its K-wide version in place; any other layer with state is an error."""
    for name, m in list(body.named_modules()):
        if type(m) in FUSERS:
            parent, _, attr = name.rpartition(".")
            setattr(body.get_submodule(parent), attr, FUSERS[type(m)](m, k))
        elif _holds_state(m):
            known = ", ".join(t.__name__ for t in FUSERS)
            raise FusionError(
                f"cannot fuse layer {name or '<model>'!r} ({type(m).__name__}): it holds parameters or buffers and "
                f"only {known} and parameter-free layers fuse; train this model unfused"
            )


def _check_same_architecture(models: Sequence[nn.Module]) -> None:
    first = {n: t.shape for n, t in models[0].state_dict().items()}
    for i, m in enumerate(models[1:], 1):
        other = {n: t.shape for n, t in m.state_dict().items()}
        if other != first:
            diff = sorted(set(first.items()) ^ set(other.items()))[:1]
            raise FusionError(f"member {i} is not the same architecture as member 0 (first difference: {diff})")


def _stacked(x: Tensor | Sequence[Tensor]) -> Tensor:
    return x if isinstance(x, Tensor) else torch.stack(list(x))


class FusedModel(nn.Module):
    """K members of one architecture computed as one module: (K, B, ...) inputs → (K, B, ...) outputs.

    `member(k)` rebuilds member k as an ordinary model with its current weights and statistics (for saving).
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(models) < 1:
            raise ValueError("fuse needs at least one model")
        _check_same_architecture(models)
        self.k = len(models)
        self._template = (copy.deepcopy(models[0]),)  # a tuple: not a submodule, so not in parameters()
        body = copy.deepcopy(models[0])
        _fuse_layers(body, self.k)
        if isinstance(getattr(body, "in_chans", None), int):
            body.in_chans *= self.k  # slowai's CNNs check their input's channel count against it
        states = [m.state_dict() for m in models]
        body.load_state_dict({n: t if t.ndim == 0 else torch.cat([s[n] for s in states]) for n, t in states[0].items()})
        self.body = body
        self.channels_last = False

    def to_channels_last(self) -> FusedModel:
        """NHWC weights and inputs (what `ChannelsLastCB` does for an unfused model: oneDNN's faster layout)."""
        self.body.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def forward(self, x: Tensor | Sequence[Tensor]) -> Tensor:
        """Member k's batch is `x[k]`; the output's first dim is the member too (no host sync: shapes only)."""
        x = _stacked(x)
        if x.shape[0] != self.k:
            raise ValueError(f"{self.k} fused members need (K={self.k}, B, ...) inputs, got {tuple(x.shape)}")
        x = x.transpose(0, 1).flatten(1, 2)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.body(x)
        return out.unflatten(1, (self.k, -1)).transpose(0, 1)

    def member_state(self, k: int) -> dict[str, Tensor]:
        """Member k's state dict, as views into the fused tensors (clone before training on if you keep it)."""
        if not 0 <= k < self.k:
            raise IndexError(f"member {k} of {self.k}")
        return {n: t if t.ndim == 0 else t.unflatten(0, (self.k, -1))[k] for n, t in self.body.state_dict().items()}

    def member(self, k: int) -> nn.Module:
        """Member k as an ordinary model (a copy, on the fused model's device and in its train/eval mode)."""
        state = self.member_state(k)
        model = copy.deepcopy(self._template[0])
        model.load_state_dict(state)
        device = next(iter(state.values())).device
        return model.to(device).train(self.training)

    def unfuse(self) -> list[nn.Module]:
        """Every member as an ordinary model, in order."""
        return [self.member(k) for k in range(self.k)]

    def extra_repr(self) -> str:
        return f"k={self.k}"


def _record_outputs(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Every module's tensor output by module path, in the order they finish (innermost first)."""
    outputs: dict[str, Tensor] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, out: object) -> None:
            if isinstance(out, Tensor) and name not in outputs:
                outputs[name] = out

        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in model.named_modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return outputs


def _agrees(fused_out: Tensor, member_outs: list[Tensor]) -> bool:
    if fused_out.ndim < 2 or any(o.shape != member_outs[0].shape for o in member_outs):
        return False
    expected = torch.stack(member_outs, 1).flatten(1, 2)  # the fused layout: member k's slice of dim 1
    if expected.shape != fused_out.shape:
        return False
    scale = expected.abs().max().clamp_min(1.0)
    return bool(torch.allclose(fused_out, expected, rtol=1e-3, atol=1e-4 * float(scale)))


def verify_fused(fused: FusedModel, models: Sequence[nn.Module], example: Tensor) -> None:
    """Run copies of the members and the fused body in train mode on `example` (each member a different batch
    order) and raise a `FusionError` naming the first layer whose fused output is not its members' outputs."""
    members = [copy.deepcopy(m).train() for m in models]  # copies: BatchNorm statistics of the real ones stay put
    body = copy.deepcopy(fused.body).train()
    dtype = next((t.dtype for t in models[0].parameters() if t.is_floating_point()), example.dtype)
    xs = [example.to(dtype).roll(k, 0) for k in range(len(models))]
    got = _record_outputs(body, torch.stack(xs, 1).flatten(1, 2))
    want = [_record_outputs(m, x) for m, x in zip(members, xs)]
    for name, out in got.items():
        if not all(name in w for w in want) or not _agrees(out, [w[name] for w in want]):
            layer = body.get_submodule(name)
            raise FusionError(
                f"cannot fuse layer {name or '<model>'!r} ({type(layer).__name__}): its fused output is not its "
                "members' outputs side by side (it mixes channels across members, e.g. torch.cat or a reshape "
                "along channels, or draws random numbers); train this model unfused"
            )


def fuse_models(models: Sequence[nn.Module], example: Tensor) -> FusedModel:
    """Fuse independently initialised copies of one architecture, verified on `example`, one member's (B, C, ...)
    batch: each fused layer must compute every member's output, else a `FusionError` names the first that does not."""
    fused = FusedModel(models)
    verify_fused(fused, models, example)
    return fused


def fuse_seeds(factory: Callable[[], nn.Module], seeds: Sequence[int], example: Tensor) -> FusedModel:
    """Member k is `factory()` built after `set_seed(seeds[k])`: the same init as the unfused run of that seed."""
    models = []
    for seed in seeds:
        set_seed(seed)
        models.append(factory())
    return fuse_models(models, example)
