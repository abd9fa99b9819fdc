"""The CIFAR-10 tutorial's four architectures, each with the tutorial's recipe and with slowai's one-cycle recipe.

Tutorial recipe: GoogleNet and DenseNet AdamW lr 1e-3, the ResNets SGD lr 0.1 momentum 0.9, weight decay 1e-4,
lr ×0.1 at 60% and 85% of training. One-cycle recipe: AdamW, one-cycle to lr 1e-2, weight decay 1e-4. Both train
on 45k/5k with flip + random-resized-crop and report test accuracy over seeds (mean ± 95% CI) against the tutorial
ResNet. The recipes are fixed, so one tune run per arm gives its validation accuracy and the seeds do the rest.
The offline CIFAR-10 copy is ~90% JPEG-decoded: expect accuracies a little below the tutorial's (GoogleNet 89.1%,
ResNet 91.0%, PreActResNet 90.7%, DenseNet 90.4% test after 200 epochs). This needs a GPU at the tutorial's scale.
"""

import sys

from slowai.study import Candidate, main

TUTORIAL = {  # model -> (recipe, lr, the tutorial's published valid/test accuracy after 200 epochs)
    "googlenet": ("tutorial_adamw", 1e-3, {"valid": 0.9022, "test": 0.8911}),
    "resnet_tutorial": ("tutorial_sgd", 0.1, {"valid": 0.9184, "test": 0.9100}),
    "preact_resnet_tutorial": ("tutorial_sgd", 0.1, {"valid": 0.9176, "test": 0.9065}),
    "densenet_tutorial": ("tutorial_adamw", 1e-3, {"valid": 0.9062, "test": 0.9043}),
}


def fixed(lr: float):
    """A search space with nothing to search: the recipe's own lr and weight decay."""
    return lambda trial: {"lr": lr, "weight_decay": 1e-4}


CANDIDATES = [
    arm
    for model, (recipe, lr, published) in TUTORIAL.items()
    for arm in (
        Candidate(f"{model}-tutorial", model, recipe=recipe, space=fixed(lr), published=published),
        Candidate(f"{model}-onecycle", model, recipe="onecycle", space=fixed(1e-2)),
    )
]

if __name__ == "__main__":
    defaults = ["--dataset", "cifar10", "--trials", "1"]  # later flags on the command line win
    sys.exit(
        main(
            "cifar10_architectures", CANDIDATES, defaults + sys.argv[1:], __doc__, reference="resnet_tutorial-tutorial"
        )
    )
