"""Networks and how they are loaded."""
from .dllm import DLLM
from .loading import KNOWN_MODELS, ModelInfo, ModelLoadError, check_memory, load_model, save_checkpoint
from .transformer import ModelConfig, Transformer

__all__ = ["DLLM", "KNOWN_MODELS", "ModelConfig", "ModelInfo", "ModelLoadError", "Transformer", "check_memory",
           "load_model", "save_checkpoint"]
