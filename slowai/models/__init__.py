"""Model zoo: every architecture registers itself by name, so `create_model("residual")` is all a study needs."""

from slowai.models import cnn  # noqa: F401  (registers conv, plain, residual, cnn)
from slowai.models import resnet, tutorial  # noqa: F401
from slowai.models.cnn import CNN, DeeperCNN
from slowai.models.registry import create_model, list_models, register_model

__all__ = ["CNN", "DeeperCNN", "create_model", "list_models", "register_model"]
