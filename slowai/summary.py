"""Per-layer model summaries (shapes, parameters, FLOPs), so an ablation can show where capacity and compute go.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`: real counts (2 per multiply-add) of matmul/conv-like
ops only (norms and activations count 0), reported as MFLOPs PER SAMPLE. The notebook's "MFlops" column counted
multiply-adds, so its numbers are half of these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from slowai.core import Callback, CancelFitException
from slowai.utils import in_notebook

COLUMNS = ["Type", "Input shape", "Output shape", "N. params", "MFLOPs/sample"]
DEFAULT_BATCH = 2  # the batch a sample shape (C, H, W) is traced with when batch_size is not given


def _fmt_shape(shape: Any) -> str:
    return "-" if shape is None else str(shape)


def _fmt_mflops(v: float) -> str:
    return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"


@dataclass
class Summary:
    """One row per chosen module plus whole-model totals; renders as text, markdown, or a wandb.Table's data."""

    rows: list[dict[str, Any]]
    total_params: int
    total_mflops: float
    batch_size: int
    columns: list[str] = field(default_factory=lambda: list(COLUMNS))

    @property
    def data(self) -> list[list[Any]]:
        """Rows (then a Total row) as plain values, for `wandb.Table(columns=s.columns, data=s.data)`."""
        body = [
            [r["type"], _fmt_shape(r["input_shape"]), _fmt_shape(r["output_shape"]), r["params"], r["mflops"]]
            for r in self.rows
        ]
        return [*body, ["Total", "", "", self.total_params, self.total_mflops]]

    def _cells(self) -> list[list[str]]:
        return [[t, i, o, f"{p:,}", _fmt_mflops(f)] for t, i, o, p, f in self.data]

    def to_markdown(self) -> str:
        """A GitHub-style table, numeric columns right-aligned."""
        lines = ["| " + " | ".join(self.columns) + " |", "| --- | --- | --- | ---: | ---: |"]
        lines += ["| " + " | ".join(row) + " |" for row in self._cells()]
        return "\n".join(lines)

    def __str__(self) -> str:
        table = [self.columns, *self._cells()]
        widths = [max(len(row[i]) for row in table) for i in range(len(self.columns))]

        def line(row: list[str]) -> str:
            left = [c.ljust(w) for c, w in zip(row[:3], widths)]
            right = [c.rjust(w) for c, w in zip(row[3:], widths[3:])]
            return "  ".join(left + right).rstrip()

        return "\n".join(line(r) for r in table)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def _default_modules(model: nn.Module) -> list[nn.Module]:
    """`model.layers` when it holds modules (slowai CNNs), else the model's top-level children."""
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.Module):
        return _as_module_list(layers)
    if isinstance(layers, (list, tuple)) and layers and all(isinstance(m, nn.Module) for m in layers):
        return list(layers)
    return list(model.children())


def _as_module_list(modules: nn.Module | Iterable[nn.Module]) -> list[nn.Module]:
    """A Sequential/ModuleList means its children (as in `summarize(m, m.layers)`); any other module is one row."""
    if isinstance(modules, (nn.Sequential, nn.ModuleList)):
        return list(modules.children())
    if isinstance(modules, nn.Module):
        return [modules]
    return list(modules)


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _batch_shape(input_shape: tuple[int, ...], batch_size: int | None) -> tuple[int, ...]:
    """(B, C, H, W) from a sample shape (C, H, W) plus batch_size (default 2), or from a batch shape as given."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 3:
        return (DEFAULT_BATCH if batch_size is None else batch_size, *shape)
    if len(shape) == 4:
        if batch_size is not None and batch_size != shape[0]:
            raise ValueError(f"input_shape {shape} sets the batch to {shape[0]} but batch_size={batch_size}: give one")
        return shape
    raise ValueError(
        f"input_shape must be a sample shape (C, H, W) or a batch shape (B, C, H, W), got {shape}; "
        "for other inputs pass xb"
    )


def _input_batch(
    model: nn.Module,
    input_shape: tuple[int, ...] | None,
    dls: Any,
    xb: torch.Tensor | None,
    batch_size: int | None,
) -> torch.Tensor:
    """The batch to trace: `xb`, else a batch from `dls`, else random data of `input_shape` (see `_batch_shape`)."""
    device = _model_device(model)
    if xb is None and dls is not None:
        batch = dls.one_batch(split="train")
        xb = batch[0] if isinstance(batch, (tuple, list)) else batch
    if xb is None:
        if input_shape is None:
            raise ValueError(
                "summarize needs one of xb, dls or input_shape (C, H, W) or (B, C, H, W) to build an input batch"
            )
        xb = torch.randn(*_batch_shape(input_shape, batch_size))
    return xb.to(device)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the trace (BatchNorm must not update), then every submodule's own mode back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _shape_of(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (tuple, list)):
        shapes = [_shape_of(o) for o in x]
        return shapes[0] if len(shapes) == 1 else tuple(shapes)
    return None


def _hook(module: nn.Module, record: dict[str, Any], counter: FlopCounterMode) -> list[Any]:
    """Record shapes and the FLOPs counted between this module's forward start and end."""

    def pre(_mod: nn.Module, args: tuple[Any, ...]) -> None:
        if record["input_shape"] is None:
            record["input_shape"] = _shape_of(args)
        record["_start"] = counter.get_total_flops()

    def post(_mod: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
        if record["output_shape"] is None:
            record["output_shape"] = _shape_of(out)
        record["_flops"] += counter.get_total_flops() - record["_start"]

    return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


def summarize(
    model: nn.Module,
    modules: nn.Module | Iterable[nn.Module] | None = None,
    input_shape: tuple[int, ...] | None = None,
    dls: Any = None,
    xb: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> Summary:
    """Trace ONE eval-mode, no-grad forward: per-module shapes (with batch dim), params and MFLOPs per sample.

    The input is `xb`, else a batch of `dls`, else random data: `input_shape` is a sample shape (C, H, W), batched
    as (batch_size, C, H, W) with batch_size 2 by default, or a whole batch shape (B, C, H, W). Either way MFLOPs
    are the traced batch's FLOPs divided by its batch size, so they do not depend on B (shapes in rows do).
    Rows default to `model.layers` (else top-level children); Total counts the whole model's params and FLOPs.
    """
    mods = _as_module_list(modules) if modules is not None else _default_modules(model)
    x = _input_batch(model, input_shape, dls, xb, batch_size)
    records = [{"input_shape": None, "output_shape": None, "_start": 0, "_flops": 0} for _ in mods]
    counter = FlopCounterMode(display=False)
    handles = [h for m, r in zip(mods, records) for h in _hook(m, r, counter)]
    try:
        with _eval_mode(model), torch.no_grad(), counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    n = x.shape[0]
    rows = [
        {
            "type": type(m).__name__,
            "input_shape": r["input_shape"],
            "output_shape": r["output_shape"],
            "params": sum(p.numel() for p in m.parameters()),
            "mflops": r["_flops"] / n / 1e6,
        }
        for m, r in zip(mods, records)
    ]
    total_params = sum(p.numel() for p in model.parameters())
    return Summary(rows, total_params, counter.get_total_flops() / n / 1e6, n)


def show(summary: Summary) -> None:
    """Rendered markdown in a notebook kernel, the aligned text table elsewhere (scripts, logs)."""
    if in_notebook():
        from IPython.display import Markdown, display

        display(Markdown(summary.to_markdown()))
    else:
        print(summary)


class SummaryCB(Callback):
    """Summarize the model on a real batch before training; `cancel=True` stops there (just inspect shapes)."""

    order = -10

    def __init__(self, modules: nn.Module | Iterable[nn.Module] | None = None, cancel: bool = False) -> None:
        super().__init__()
        self.modules, self.cancel = modules, cancel
        self.summary: Summary | None = None

    def before_fit(self) -> None:
        self.summary = summarize(self.learn.model, self.modules, dls=self.learn.dls)
        self.learn.summary = self.summary
        show(self.summary)
        if self.cancel:
            raise CancelFitException()
