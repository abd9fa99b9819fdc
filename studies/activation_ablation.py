"""Activation × init on the residual net, as a 2×2 factorial: GeneralReLU vs ReLU × leaky-Kaiming vs default init.

All four cells are tuned (lr, weight decay) and confirmed on paired seeds. Besides each cell vs plain PyTorch (ReLU,
default init), the report gives both main effects (e.g. GeneralReLU's gain averaged over the two inits) and their
interaction (does the leaky init matter more with GeneralReLU?), each with a CI, Holm-corrected.
"""

import sys

import torch.nn as nn

from slowai import GeneralReLU
from slowai.study import Ablation, Candidate, main

ABLATION = Ablation(
    Candidate("relu+default", "residual", {"act": nn.ReLU, "init": "default"}),
    {
        "act": {"relu": {}, "generalrelu": {"act": GeneralReLU}},
        "init": {"default": {}, "leaky": {"init": "leaky"}},
    },
    design="factorial",
)

if __name__ == "__main__":
    sys.exit(main("activation_ablation", ABLATION, description=__doc__))
