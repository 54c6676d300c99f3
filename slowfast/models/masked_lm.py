"""Any transformers masked LM as a diffusion LM (e.g. dllm-hub/ModernBERT-base-chat-v0.1).

A masked diffusion LM is a mask predictor: logits for every position of a canvas with mask
tokens in it. Checkpoints that ``transformers.AutoModelForMaskedLM`` loads (natively, or
with their own code when the caller trusts the folder) give exactly that, so the samplers
run on their logits unchanged; the mask token is the tokenizer's. What they lack is our
transformer's layers, so dLLM-Cache is not available for them (``supports_cache`` False:
the engine refuses ``cache`` with a ValueError before the run).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

FAMILY = "masked-lm"


def native_masked_lm_types() -> frozenset[str]:
    """``model_type`` values transformers' AutoModelForMaskedLM maps to a built-in class."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return frozenset(MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def is_masked_lm_config(raw: dict[str, Any]) -> bool:
    return str(raw.get("model_type", "")) in native_masked_lm_types()


def wants_remote_masked_lm(raw: dict[str, Any]) -> bool:
    """A folder whose own code (``auto_map``) provides an AutoModelForMaskedLM class."""
    auto_map = raw.get("auto_map")
    return isinstance(auto_map, dict) and "AutoModelForMaskedLM" in auto_map


@dataclass
class MaskedLMFacts:
    """The few facts the engine reads from ``net.cfg`` (our ModelConfig's names)."""

    vocab_size: int
    n_layers: int
    max_sequence_length: int
    d_model: int
    model_type: str


class MaskedLMNet(nn.Module):
    """A transformers masked LM behind our network's call: tokens -> logits of rows
    ``logits_from..T-1`` (no cache)."""

    supports_cache = False

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model
        c = hf_model.config
        self.cfg = MaskedLMFacts(
            vocab_size=int(c.vocab_size),
            n_layers=int(getattr(c, "num_hidden_layers", 0) or 0),
            max_sequence_length=int(getattr(c, "max_position_embeddings", 0) or 512),
            d_model=int(getattr(c, "hidden_size", 0) or 0),
            model_type=str(getattr(c, "model_type", "")),
        )
        tables = [m for m in (hf_model.get_input_embeddings(), hf_model.get_output_embeddings()) if m is not None]
        table_ids = {id(p) for m in tables for p in m.parameters()}
        self._body_params = sum(p.numel() for p in hf_model.parameters() if id(p) not in table_ids)

    def forward(self, tokens: torch.Tensor, cache: Optional[Any] = None, logits_from: int = 0) -> torch.Tensor:
        if cache is not None:
            raise ValueError("cache: dLLM-Cache is not available for this model (a transformers masked LM)")
        T = tokens.shape[1]
        if T > self.cfg.max_sequence_length:
            raise ValueError(f"input length {T} exceeds the model's context (max_position_embeddings="
                             f"{self.cfg.max_sequence_length})")
        logits = self.hf(input_ids=tokens).logits
        return logits[:, logits_from:, : self.cfg.vocab_size]

    def forward_flops(self, batch: int, rows: int, cache: Optional[Any] = None, logits_from: int = 0) -> float:
        """A rough estimate: 2 FLOPs per non-embedding weight and token, attention scores and
        sums over all rows, and the output head for the rows read."""
        d, layers, vocab = self.cfg.d_model, self.cfg.n_layers, self.cfg.vocab_size
        n = batch * rows
        return float(2 * self._body_params * n + 4 * batch * rows * rows * d * layers
                     + 2 * batch * (rows - logits_from) * d * vocab)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.hf.parameters())
