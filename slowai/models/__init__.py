"""Model zoo: every architecture registers itself by name, so `create_model("residual")` is all a study needs."""

from slowai.models import cnn, resnet, tutorial, tutorial_densenet  # noqa: F401  (importing them registers their models)
from slowai.models.cnn import CNN, DeeperCNN
from slowai.models.registry import create_model, list_models, register_model

__all__ = ["CNN", "DeeperCNN", "create_model", "list_models", "register_model"]
