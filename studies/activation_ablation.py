"""Activation and init ablation on the residual net: GeneralReLU vs ReLU × leaky-Kaiming vs PyTorch default init.

Same machinery as residual_vs_plain: every arm is tuned (lr, weight decay), confirmed over seeds on the test set,
and compared with the plain-PyTorch arm (ReLU, default init) with 95% CIs and Welch's test.
"""

import sys

import torch.nn as nn

from slowai import GeneralReLU
from slowai.study import Candidate, main

CANDIDATES = [
    Candidate("generalrelu-leaky", "residual", {"act": GeneralReLU, "init": "leaky"}),
    Candidate("generalrelu-default", "residual", {"act": GeneralReLU, "init": "default"}),
    Candidate("relu-leaky", "residual", {"act": nn.ReLU, "init": "leaky"}),
    Candidate("relu-default", "residual", {"act": nn.ReLU, "init": "default"}),
]

if __name__ == "__main__":
    sys.exit(main("activation_ablation", CANDIDATES, description=__doc__, reference="relu-default"))
