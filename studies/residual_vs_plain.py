"""Residual vs plain vs timm ResNet18: which is better on Fashion-MNIST, by how much, at what cost?

Each candidate is tuned with the same number of Optuna trials (lr and weight decay, pruned per epoch), then its
best hyperparameters are retrained with several seeds and scored on the held-out test set. The report gives mean
test accuracy with 95% CIs, the difference to `plain` with Welch's test, parameters, MFLOPs and seconds per epoch.
Rerunning the same command resumes the study; every trial is in the Optuna storage and (offline) W&B.
"""

import sys

from slowai.study import main

CANDIDATES = ["residual", "plain", "timm/resnet18"]

if __name__ == "__main__":
    sys.exit(main("residual_vs_plain", CANDIDATES, description=__doc__, reference="plain"))
