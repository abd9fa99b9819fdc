"""Residual vs plain on scikit-learn's 8×8 handwritten digits (1,797 real images shipped with the package).

Shows a study on a dataset from the registry, tuning more than the learning rate: the optimizer (AdamW or SGD
with momentum), the schedule (one-cycle or cosine with warm-up) and the network width, at batch size 64.
"""

import sys

from slowai.study import main


def space(trial):
    hp = {
        "lr": trial.suggest_float("lr", 1e-3, 3e-1, log=True),
        "opt": trial.suggest_categorical("opt", ["adamw", "sgd"]),
        "sched": trial.suggest_categorical("sched", ["onecycle", "cosine"]),
        "model.width": trial.suggest_categorical("model.width", [4, 8, 16]),
        "train.bs": 64,
    }
    if hp["sched"] == "cosine":  # define-by-run: the warm-up exists only for the cosine schedule
        hp["sched.warmup"] = trial.suggest_float("sched.warmup", 0.0, 0.3)
    return hp


if __name__ == "__main__":
    argv = ["--epochs", "10", *sys.argv[1:]]  # 1,100 training images: more, shorter epochs (later flags win)
    sys.exit(main("digits", ["residual", "plain"], argv, __doc__, space=space, dataset="digits", reference="plain"))
