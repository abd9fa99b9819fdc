# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Model summaries and training diagnostics
#
# Where do the parameters and the compute of the seed notebook's Fashion-MNIST CNNs go, and how do their activations
# behave while training? This notebook shows slowai's tools for that:
#
# - `summarize`: per-layer shapes, parameters and FLOPs from one traced forward pass;
# - `ActivationStatsCB`: per-layer activation mean, std and histograms during training;
# - `SummaryCB`: the same summary, taken on a real batch when a fit starts;
# - `RecorderCB`: the learning rate (and momentum) each batch trained with.
#
# Set `SLOWAI_NB_QUICK=1` in the environment to run on a 2,000-image subset for one epoch (the test suite does this);
# otherwise it trains on the full data for the seed's 3 epochs.
#
# **The outputs saved in this notebook come from the full run** (60,000 training images, 3 epochs, not the quick
# path): about 5 minutes on an otherwise idle 2-core CPU.

# %%
import os

import matplotlib.pyplot as plt

import slowai
from slowai import ActivationStatsCB, RecorderCB, SummaryCB, create_model, evaluate, fashion_mnist, summarize

QUICK = os.environ.get("SLOWAI_NB_QUICK") == "1"
N_EPOCHS = 1 if QUICK else 3
slowai.set_seed(42)
dls = fashion_mnist(bs=512, val_size=0, subset=2000 if QUICK else None)  # val_size=0: validate on the test set
print(dls)

# %% [markdown]
# ## Parameters and FLOPs per layer
#
# The seed's tables for the three `DeeperCNN` variants (single `Conv` blocks, `DoubleConvBlock`s without skips,
# `ResidualConvBlock`s) and for timm's ResNet-18. Rows are `model.layers` for slowai CNNs and the top-level children
# for timm models. Shapes include the batch dimension of the traced batch (2 here).
#
# **FLOPs are real counts** from `torch.utils.flop_counter` (2 per multiply-add, convolutions and matmuls only),
# **per sample**: twice the seed's "MFlops" column, which counted multiply-adds.

# %%
summarize(create_model("conv"), input_shape=dls.input_shape)

# %%
summarize(create_model("plain"), input_shape=dls.input_shape)

# %%
summarize(create_model("residual"), input_shape=dls.input_shape)

# %%
summarize(create_model("timm/resnet18", in_chans=1, num_classes=10), input_shape=dls.input_shape)

# %% [markdown]
# ## Training `residual` with activation statistics
#
# One `train_1cycle` run (AdamW, one-cycle to lr 1e-2, batch size 512) with three extra callbacks:
# `SummaryCB` prints the summary on a real batch before the first step, `ActivationStatsCB` records every layer's
# activations on every training batch, and `RecorderCB` records the schedule.

# %%
slowai.set_seed(42)
stats, recorder = ActivationStatsCB(), RecorderCB()
cbs = [SummaryCB(), stats, recorder]
learn = slowai.train_1cycle(create_model("residual"), dls, lr=1e-2, n_epochs=N_EPOCHS, cbs=cbs)
evaluate(learn.model, dls.test)

# %% [markdown]
# Mean and standard deviation of each layer's output per batch: well-scaled layers keep a steady std instead of
# collapsing towards 0 or blowing up.

# %%
stats.mean_std_plot()
plt.show()

# %% [markdown]
# Histograms of |activation| over training (brighter = more activations of that magnitude in that batch).

# %%
stats.hist_plot()
plt.show()

# %% [markdown]
# Share of |activations| in the lowest 2 histogram bins (|a| < 0.5): near 1 means mostly idle units.

# %%
stats.near_zero_plot()
plt.show()

# %% [markdown]
# The one-cycle schedule of this run: the lr warms up then anneals, AdamW's beta1 does the reverse.

# %%
recorder.plot()
plt.show()

# %% [markdown]
# `SummaryCB(cancel=True)` inspects a model on a real batch without training it: the fit stops right after the
# summary.

# %%
learn = slowai.Learner(create_model("plain"), dls, cbs=SummaryCB(cancel=True)).fit(1)
print(f"{learn.summary.total_params:,} parameters, {learn.summary.total_mflops:.2f} MFLOPs per sample")
