"""OpenAI-compatible HTTP serving of a LayerSkip model (`layerskip serve`)."""

from layerskip.serve.app import create_app
from layerskip.serve.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
