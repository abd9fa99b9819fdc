"""Activation statistics via forward hooks: see whether each layer's outputs stay well scaled or die during training."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

from slowai.core import Callback


class ActivationStatsCB(Callback):
    """Per layer and training batch: mean, std and a histogram of |activation|, all kept on the device.

    `modules` defaults to `model.layers` (slowai CNNs) or the model's top-level children. Hooks are attached for
    the fit and removed afterwards, even on error; the recorded stats stay readable (`stats`, plots).
    """

    order = 5

    def __init__(
        self, modules: Iterable[nn.Module] | None = None, bins: int = 40, hist_max: float = 10.0, near_zero: int = 2
    ) -> None:
        self.modules, self.bins, self.hist_max, self.near_zero = modules, bins, hist_max, near_zero
        self.stats: list[dict[str, list[torch.Tensor]]] = []

    def _targets(self) -> list[nn.Module]:
        if self.modules is not None:
            return list(self.modules)
        layers = getattr(self.learn.model, "layers", None)
        return list(layers) if isinstance(layers, nn.Module) else list(self.learn.model.children())

    def before_fit(self) -> None:
        targets = self._targets()
        self.names = [type(m).__name__ for m in targets]
        self.stats = [{"mean": [], "std": [], "hist": []} for _ in targets]
        self.handles = [m.register_forward_hook(self._hook(s)) for m, s in zip(targets, self.stats)]

    def _hook(self, store: dict[str, list[torch.Tensor]]) -> Any:
        def hook(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            if not self.learn.training or not isinstance(out, torch.Tensor):
                return
            acts = out.detach().float()
            store["mean"].append(acts.mean())
            store["std"].append(acts.std())
            store["hist"].append(torch.histc(acts.abs(), self.bins, 0, self.hist_max))

        return hook

    def cleanup_fit(self) -> None:
        for h in getattr(self, "handles", []):
            h.remove()
        self.handles = []

    def series(self, key: str) -> list[torch.Tensor]:
        """Per layer, the stacked per-batch `mean`/`std` (1-D) or `hist` (batches × bins), on the CPU (one sync)."""
        return [torch.stack(s[key]).cpu() if s[key] else torch.empty(0) for s in self.stats]

    def near_zero_fraction(self) -> list[torch.Tensor]:
        """Per layer and batch, the share of |activations| in the lowest `near_zero` bins: dead/saturated units."""
        return [h[:, : self.near_zero].sum(1) / h.sum(1).clamp_min(1) for h in self.series("hist")]

    def mean_std_plot(self) -> Any:
        import matplotlib.pyplot as plt

        fig, axs = plt.subplots(1, 2, figsize=(10, 4))
        for name, mean, std in zip(self._labels(), self.series("mean"), self.series("std")):
            axs[0].plot(mean.numpy(), label=name)
            axs[1].plot(std.numpy(), label=name)
        axs[0].set(title="activation mean", xlabel="batch")
        axs[1].set(title="activation std", xlabel="batch")
        axs[1].legend(fontsize="small")
        fig.tight_layout()
        return fig

    def hist_plot(self) -> Any:
        """One image per layer: histogram of log(1+count) of |activation| (y) over batches (x)."""
        import matplotlib.pyplot as plt

        hists = self.series("hist")
        fig, axs = plt.subplots(1, len(hists), figsize=(2.5 * len(hists), 2.5), squeeze=False)
        for ax, name, h in zip(axs[0], self._labels(), hists):
            ax.imshow(h.T.log1p().numpy(), origin="lower", aspect="auto", extent=(0, len(h), 0, self.hist_max))
            ax.set(title=name, xlabel="batch")
        fig.tight_layout()
        return fig

    def near_zero_plot(self) -> Any:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, frac in zip(self._labels(), self.near_zero_fraction()):
            ax.plot(frac.numpy(), label=name)
        ax.set(title="fraction of near-zero activations", xlabel="batch", ylim=(0, 1))
        ax.legend(fontsize="small")
        fig.tight_layout()
        return fig

    def _labels(self) -> list[str]:
        return [f"{i}: {n}" for i, n in enumerate(self.names)]
