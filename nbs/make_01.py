"""Generate `01_summary.ipynb` (outputs empty) from this script, so the notebook's source stays reviewable as code.

python nbs/make_01.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS: list[tuple[str, str]] = [
    (
        "md",
        """# Model summaries and training diagnostics

Where do the parameters and the compute of the seed notebook's Fashion-MNIST CNNs go, and how do their activations
behave while training? This notebook shows slowai's tools for that:

- `summarize`: per-layer shapes, parameters and FLOPs from one traced forward pass;
- `ActivationStatsCB`: per-layer activation mean, std and histograms during training;
- `SummaryCB`: the same summary, taken on a real batch when a fit starts;
- `RecorderCB`: the learning rate (and momentum) each batch trained with.

Set `SLOWAI_NB_QUICK=1` in the environment to run on a 2,000-image subset for one epoch (the test suite does this);
otherwise it trains on the full data for the seed's 3 epochs.""",
    ),
    (
        "code",
        """import os

import matplotlib.pyplot as plt

import slowai
from slowai import ActivationStatsCB, RecorderCB, SummaryCB, create_model, evaluate, fashion_mnist, summarize

QUICK = os.environ.get("SLOWAI_NB_QUICK") == "1"
N_EPOCHS = 1 if QUICK else 3
slowai.set_seed(42)
dls = fashion_mnist(bs=512, val_size=0, subset=2000 if QUICK else None)  # val_size=0: validate on the test set
dls""",
    ),
    (
        "md",
        """## Parameters and FLOPs per layer

The seed's tables for the three `DeeperCNN` variants (single `Conv` blocks, `DoubleConvBlock`s without skips,
`ResidualConvBlock`s) and for timm's ResNet-18. Rows are `model.layers` for slowai CNNs and the top-level children
for timm models. Shapes include the batch dimension of the traced batch (2 here).

**FLOPs are real counts** from `torch.utils.flop_counter` (2 per multiply-add, convolutions and matmuls only),
**per sample**: twice the seed's "MFlops" column, which counted multiply-adds.""",
    ),
    ("code", 'summarize(create_model("conv"), input_shape=dls.input_shape)'),
    ("code", 'summarize(create_model("plain"), input_shape=dls.input_shape)'),
    ("code", 'summarize(create_model("residual"), input_shape=dls.input_shape)'),
    ("code", 'summarize(create_model("timm/resnet18", in_chans=1, num_classes=10), input_shape=dls.input_shape)'),
    (
        "md",
        """## Training `residual` with activation statistics

One `train_1cycle` run (AdamW, one-cycle to lr 1e-2, batch size 512) with three extra callbacks:
`SummaryCB` prints the summary on a real batch before the first step, `ActivationStatsCB` records every layer's
activations on every training batch, and `RecorderCB` records the schedule.""",
    ),
    (
        "code",
        """slowai.set_seed(42)
stats, recorder = ActivationStatsCB(), RecorderCB()
cbs = [SummaryCB(), stats, recorder]
learn = slowai.train_1cycle(create_model("residual"), dls, lr=1e-2, n_epochs=N_EPOCHS, cbs=cbs)
evaluate(learn.model, dls.test)""",
    ),
    (
        "md",
        """Mean and standard deviation of each layer's output per batch: well-scaled layers keep a steady std instead of
collapsing towards 0 or blowing up.""",
    ),
    ("code", "stats.mean_std_plot();"),
    (
        "md",
        "Histograms of |activation| over training (brighter = more activations of that magnitude in that batch).",
    ),
    ("code", "stats.hist_plot();"),
    ("md", "Share of |activations| in the lowest 2 histogram bins (|a| < 0.5): near 1 means mostly idle units."),
    ("code", "stats.near_zero_plot();"),
    ("md", "The one-cycle schedule of this run: the lr warms up then anneals, AdamW's beta1 does the reverse."),
    ("code", "recorder.plot();"),
    (
        "md",
        """`SummaryCB(cancel=True)` inspects a model on a real batch without training it: the fit stops right after the
summary.""",
    ),
    (
        "code",
        """learn = slowai.Learner(create_model("plain"), dls, cbs=SummaryCB(cancel=True)).fit(1)
learn.summary.total_params, learn.summary.total_mflops""",
    ),
]


def build() -> nbformat.NotebookNode:
    """The notebook, cells in order, no outputs."""
    make = {"md": new_markdown_cell, "code": new_code_cell}
    nb = new_notebook(cells=[make[kind](src) for kind, src in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    out = Path(__file__).with_name("01_summary.ipynb")
    nbformat.write(build(), out)
    print(f"wrote {out}")
