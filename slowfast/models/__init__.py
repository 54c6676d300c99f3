"""Networks and how they are loaded."""
from .loading import DLLM, ModelLoadError, load_model, save_checkpoint
from .transformer import ModelConfig, Transformer

__all__ = ["DLLM", "ModelConfig", "ModelLoadError", "Transformer", "load_model", "save_checkpoint"]
