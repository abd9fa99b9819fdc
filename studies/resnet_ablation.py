"""Which parts of the notebook's residual net earn their keep? Each component removed from the full net, one at a time.

Components: the skip connection, GeneralReLU (→ ReLU), leaky-Kaiming init (→ PyTorch's default), BatchNorm (→ none,
conv biases instead) and the identity path's avg-pool + 1×1 projection (→ a strided 1×1 conv, the classic ResNet
shortcut). Every arm is tuned on the same budget, confirmed on paired seeds, and compared with the full net: the
report's ablation table gives Δ accuracy with its CI, a verdict under Holm's correction, and Δ params/MFLOPs/time.
"""

import sys

import torch.nn as nn

from slowai.study import Ablation, Candidate, main

ABLATION = Ablation(
    Candidate("full", "residual"),
    {
        "skip": {"on": {}, "off": {"skip": False}},
        "act": {"generalrelu": {}, "relu": {"act": nn.ReLU}},
        "init": {"leaky": {}, "default": {"init": "default"}},
        "norm": {"batchnorm": {}, "none": {"norm": False}},
        "shortcut": {"pool": {}, "stride": {"shortcut": "stride"}},
    },
    design="leave-one-out",
)

if __name__ == "__main__":
    sys.exit(main("resnet_ablation", ABLATION, description=__doc__))
