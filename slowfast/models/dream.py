"""Dream-v0 checkpoints (Dream-org/Dream-v0-Instruct-7B, -Base-7B) in our transformer.

Dream is Qwen2.5-7B's network trained as a mask predictor: Qwen2 tensor names, grouped-query
attention, biases on q/k/v only (not on o_proj or the MLP), RoPE theta and RMSNorm eps from
config.json, bidirectional attention, and shifted logits: it was initialised from an
autoregressive model, so the prediction for position i is read at row i - 1. Its official
folder carries remote code (``auto_map``, ``modeling_dream.py``, ``tokenization_dream.py``);
none of it is needed here: the network is ours (``Block`` already has q/k/v biases and GQA)
and the tokenizer is Qwen2's byte-level BPE, which transformers has natively.
"""
from __future__ import annotations

import re
from typing import Any, Optional

FAMILY = "dream"
ARCHITECTURE = "DreamModel"

# our ModelConfig field -> Dream's config.json key
CONFIG_KEYS = {
    "d_model": "hidden_size",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "n_layers": "num_hidden_layers",
    "mlp_hidden_size": "intermediate_size",
    "vocab_size": "vocab_size",
    "max_sequence_length": "max_position_embeddings",
    "rope_theta": "rope_theta",
    "rms_norm_eps": "rms_norm_eps",
    "weight_tying": "tie_word_embeddings",
    "mask_token_id": "mask_token_id",
    "eos_token_id": "eos_token_id",
    "pad_token_id": "pad_token_id",
}
REQUIRED = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size")
# DreamConfig's own defaults for keys a config.json may leave out
DEFAULTS = {"rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_sequence_length": 32768, "weight_tying": False,
            "n_kv_heads": None, "mask_token_id": None, "pad_token_id": None}
# what is fixed in Dream's modeling code rather than configured
FIXED = {"include_qkv_bias": True, "include_bias": False, "activation_type": "silu", "block_type": "llama",
         "embedding_size": None, "model_type": FAMILY}


def is_dream_config(raw: dict[str, Any]) -> bool:
    archs = raw.get("architectures")
    return str(raw.get("model_type", "")).lower() == FAMILY or (isinstance(archs, list) and ARCHITECTURE in archs)


def unsupported(raw: dict[str, Any]) -> list[str]:
    """Config values our network would silently compute wrongly."""
    out = []
    if raw.get("hidden_act", "silu") != "silu":
        out.append(f"hidden_act={raw['hidden_act']!r} (supported: 'silu')")
    if raw.get("rope_scaling") is not None:
        out.append(f"rope_scaling={raw['rope_scaling']!r} (supported: null)")
    if raw.get("use_sliding_window"):
        out.append("use_sliding_window=true (supported: false)")
    heads, d = raw.get("num_attention_heads"), raw.get("hidden_size")
    head_dim = raw.get("head_dim")
    if head_dim is not None and isinstance(heads, int) and isinstance(d, int) and heads and head_dim * heads != d:
        out.append(f"head_dim={head_dim} with hidden_size={d}, num_attention_heads={heads} (head_dim must be "
                   "hidden_size / num_attention_heads)")
    return out


def config_fields(raw: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """(our ModelConfig fields, every eos id config.json names) from Dream's config.json."""
    fields = dict(DEFAULTS)
    fields.update({ours: raw[theirs] for ours, theirs in CONFIG_KEYS.items() if theirs in raw})
    eos = fields.get("eos_token_id")
    eos_ids = [e for e in (eos if isinstance(eos, list) else [eos]) if isinstance(e, int) and not isinstance(e, bool)]
    if isinstance(eos, list):
        fields["eos_token_id"] = eos_ids[0] if eos_ids else None
    fields.update(FIXED)
    return fields, eos_ids


# Dream's tensor name inside "model.layers.{i}." -> ours inside "transformer.blocks.{i}."
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "q_proj.weight",
    "self_attn.q_proj.bias": "q_proj.bias",
    "self_attn.k_proj.weight": "k_proj.weight",
    "self_attn.k_proj.bias": "k_proj.bias",
    "self_attn.v_proj.weight": "v_proj.weight",
    "self_attn.v_proj.bias": "v_proj.bias",
    "self_attn.o_proj.weight": "attn_out.weight",
    "post_attention_layernorm.weight": "ff_norm.weight",
    "mlp.gate_proj.weight": "ff_proj.weight",
    "mlp.up_proj.weight": "up_proj.weight",
    "mlp.down_proj.weight": "ff_out.weight",
}
TOP_NAMES = {
    "model.embed_tokens.weight": "transformer.wte.weight",
    "model.norm.weight": "transformer.ln_f.weight",
    "lm_head.weight": "transformer.ff_out.weight",
}
_THEIR_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_OUR_LAYER = re.compile(r"transformer\.blocks\.(\d+)\.(.+)")
_OURS_TO_LAYER = {v: k for k, v in LAYER_NAMES.items()}
_OURS_TO_TOP = {v: k for k, v in TOP_NAMES.items()}


class DreamNames:
    """Dream's checkpoint tensor names <-> our parameter names (unknown names pass through,
    so the loader can name them in its message)."""

    def ours(self, key: str) -> str:
        if key in TOP_NAMES:
            return TOP_NAMES[key]
        m = _THEIR_LAYER.fullmatch(key)
        if m and m.group(2) in LAYER_NAMES:
            return f"transformer.blocks.{m.group(1)}.{LAYER_NAMES[m.group(2)]}"
        return key

    def theirs(self, name: str) -> str:
        if name in _OURS_TO_TOP:
            return _OURS_TO_TOP[name]
        m = _OUR_LAYER.fullmatch(name)
        if m and m.group(2) in _OURS_TO_LAYER:
            return f"model.layers.{m.group(1)}.{_OURS_TO_LAYER[m.group(2)]}"
        return name


def tokenizer_class(trust_remote_code: bool) -> Optional[type]:
    """The class to read Dream's tokenizer with: Qwen2's (DreamTokenizer is a copy of it), or
    None to let AutoTokenizer run the folder's own class when remote code is allowed."""
    if trust_remote_code:
        return None
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer


# The config.json a Dream-v0 checkpoint ships (values of Dream-v0-Instruct-7B), for writers
# of checkpoints in this layout (slowfast.models.tiny).
def config_json(fields: dict[str, Any]) -> dict[str, Any]:
    """Dream's config.json for our ``ModelConfig`` fields (``fields``), with its own keys."""
    return {
        "architectures": [ARCHITECTURE],
        "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "bos_token_id": fields["eos_token_id"],
        "eos_token_id": fields["eos_token_id"],
        "hidden_act": "silu",
        "hidden_size": fields["d_model"],
        "initializer_range": 0.02,
        "intermediate_size": fields["mlp_hidden_size"],
        "mask_token_id": fields["mask_token_id"],
        "max_position_embeddings": fields["max_sequence_length"],
        "max_window_layers": fields["n_layers"],
        "model_type": "Dream",
        "num_attention_heads": fields["n_heads"],
        "num_hidden_layers": fields["n_layers"],
        "num_key_value_heads": fields["n_kv_heads"] or fields["n_heads"],
        "pad_token_id": fields["pad_token_id"],
        "rms_norm_eps": fields["rms_norm_eps"],
        "rope_scaling": None,
        "rope_theta": fields["rope_theta"],
        "sliding_window": None,
        "tie_word_embeddings": fields["weight_tying"],
        "torch_dtype": "float32",
        "transformers_version": "4.46.2",
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": fields["vocab_size"],
    }


# Dream-v0-Instruct-7B's generation_config.json (its generate's defaults).
GENERATION_CONFIG = {"_from_model_config": True, "alg": "origin", "alg_temp": None, "eps": 0.001,
                     "mask_token_id": None, "output_history": False, "steps": 512, "temperature": 0.0,
                     "top_k": None, "top_p": None, "transformers_version": "4.46.2"}
