"""``bench gpu``'s shapes and constants: LLaDA-8B-Instruct's and Llama-3-8B's published configs,
the shrunken ``--small`` shapes, the GPUs' peaks, and the random-weight models built from them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...models.loading import llada_config as from_config_json
from ...models.transformer import ModelConfig, Transformer

PROJECTION_LABEL = "projection from measured per-forward times (not a measured generation)"

# LLaDA-8B-Instruct's config.json as published (GSAI-ML/LLaDA-8B-Instruct); read from a copy of
# the hub file (github.com/yinj66/support_basis, LLaDA-8B-Instruct-B&S-light/config.json), and it
# matches loading.LLADA_8B and docs/algorithms.md section 5. Built through loading.llada_config,
# the loader's own path from a config.json to our ModelConfig.
LLADA_8B_CONFIG_JSON: dict[str, Any] = {
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
    "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 4096,
    "embedding_dropout": 0.0, "embedding_size": 126464, "eos_token_id": 126081, "flash_attention": False,
    "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
    "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
    "layer_norm_with_affine": True, "mask_token_id": 126336, "max_sequence_length": 4096,
    "mlp_hidden_size": 12288, "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None,
    "n_heads": 32, "n_kv_heads": 32, "n_layers": 32, "pad_token_id": 126081, "precision": "amp_bf16",
    "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True,
    "rope_theta": 500000.0, "scale_logits": False, "use_cache": False, "vocab_size": 126464,
    "weight_tying": False,
}
LLADA_8B_SOURCE = ("GSAI-ML/LLaDA-8B-Instruct config.json (copy read at github.com/yinj66/support_basis, "
                   "LLaDA-8B-Instruct-B&S-light/config.json); built with slowfast.models.loading.llada_config")

# Meta-Llama-3-8B's config.json fields that set its shape (as published; the Instruct model has
# the same shape, eos 128009).
LLAMA3_8B_CONFIG: dict[str, Any] = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192, "rope_theta": 500000.0,
    "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False,
    "mlp_bias": False, "bos_token_id": 128000, "eos_token_id": 128001, "pad_token_id": 128001,
}
LLAMA3_8B_SOURCE = "meta-llama/Meta-Llama-3-8B config.json (shape fields), transformers' LlamaConfig"

# The shrunken shapes of --small (CPU runs and the tests): same structure, tiny sizes.
SMALL_LLADA: dict[str, Any] = {
    "d_model": 64, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "mlp_hidden_size": 128, "vocab_size": 512,
    "embedding_size": 512, "max_sequence_length": 4096, "rope_theta": 500000.0, "mask_token_id": 511,
    "eos_token_id": 510,
}
SMALL_LLAMA: dict[str, Any] = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 4096, "rope_theta": 500000.0,
    "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 0,
    "eos_token_id": 1, "pad_token_id": 1,
}

# Dense (no 2:4 sparsity) bf16 tensor-core peaks, FLOP/s, from NVIDIA's datasheets (the
# "with sparsity" figure halved): H100 SXM5 and H200 989.4 TFLOP/s (the same GH100 compute),
# H100 PCIe 756, H100 NVL 835, A100 (SXM4 and PCIe) 312. Matched on torch's device name, the
# more specific entries first; an unknown GPU gets FLOP/s only (or --peak-tflops).
PEAK_BF16_DENSE: list[tuple[str, str, float]] = [
    ("H200", "NVIDIA H200 (SXM), datasheet dense BF16", 989.4e12),
    ("H100 PCIe", "NVIDIA H100 PCIe, datasheet dense BF16", 756e12),
    ("H100 NVL", "NVIDIA H100 NVL, datasheet dense BF16", 835e12),
    ("H100", "NVIDIA H100 SXM5, datasheet dense BF16", 989.4e12),
    ("A100", "NVIDIA A100, datasheet dense BF16", 312e12),
]

FLOPS_METHOD = ("Transformer.forward_flops: matmul FLOPs of the Q/K/V and output projections, attention "
                "(scores and weighted sum, 4*T*d per query row), the SwiGLU FFN, and the output head over the "
                "generated rows only (the engine asks for those logits); norms, RoPE and softmax not counted")

CASES = ("both", "response", "prompt", "neither")
CASE_NAMES = {
    "both": "prompt + response refresh",
    "response": "response refresh",
    "prompt": "prompt refresh (response V-verified)",
    "neither": "V-verify (neither refresh)",
}


# --- the models -------------------------------------------------------------------------------------

def llada_config(small: bool) -> ModelConfig:
    """Our ModelConfig of LLaDA-8B-Instruct (through the loader's own function) or the small shape."""
    if small:
        return ModelConfig.from_dict(dict(SMALL_LLADA))
    return from_config_json(dict(LLADA_8B_CONFIG_JSON), Path("GSAI-ML/LLaDA-8B-Instruct/config.json"))


@torch.no_grad()
def random_transformer(cfg: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Transformer:
    """Our Transformer with random weights allocated on ``device`` in ``dtype`` directly (built on
    the meta device, then ``to_empty``): normal(0, 0.02) matrices, unit norm weights, zero biases."""
    with torch.device("meta"):
        net = Transformer(cfg)
    net = net.to(dtype=dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in net.named_parameters():
        if p.dim() >= 2:
            p.normal_(0.0, 0.02, generator=gen)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)
    return net.eval()


def llama_config(small: bool):
    from transformers import LlamaConfig  # here: transformers' Llama code loads slowly, and only the anchor needs it

    return LlamaConfig(**(SMALL_LLAMA if small else LLAMA3_8B_CONFIG))


def random_llama(config, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """transformers' LlamaForCausalLM from ``config`` with random weights, built on ``device``."""
    from transformers import LlamaForCausalLM  # here: as in llama_config

    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    return model.to(device).eval()

