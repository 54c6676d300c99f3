"""LLaDA2.x (LLaDA2.0 / 2.1 mini and flash, ``LLaDA2MoeModelLM``) in our own network, no remote code.

The official folders (``inclusionAI/LLaDA2.0-mini``, ``-flash``, ``LLaDA2.1-mini``, ``-flash``)
carry their modeling code (``modeling_llada2_moe.py``, ``configuration_llada2_moe.py``) for
``trust_remote_code``; none of it runs here. What this module computes, read from that code:

* config.json keys of ``LLaDA2MoeConfig`` with its defaults (``Config``; values the published
  code does not implement, or implements otherwise than its key says, are refused by name);
* per layer: ``h = x + dense(attn(input_layernorm(x)))``, ``out = h + mlp(post_attention_layernorm(h))``;
  RMSNorm normalised in float32, cast back, times the weight;
* attention: one fused ``query_key_value`` projection split into H query heads and KV key/value
  heads (grouped-query), an RMSNorm over each query and key head (``query_layernorm``,
  ``key_layernorm``), RoPE on the first ``head_dim * partial_rotary_factor`` dimensions only
  (half-rotation, cos/sin in float32 cast to the activations' dtype), softmax scale
  1/sqrt(head_dim), output projection ``dense`` (bias when ``use_bias``);
* the FFN: a SwiGLU MLP in the first ``first_k_dense_replace`` layers, then a mixture of
  experts: a router ``gate`` (float32 logits, sigmoid scores, plus the per-expert
  ``expert_bias`` for choosing only), group-limited top-k (groups scored by the sum of their
  two best experts, the best ``topk_group`` groups kept, the top ``num_experts_per_tok``
  experts among them), the chosen experts weighted by their sigmoid scores normalised to sum
  to 1 (when more than one) times ``routed_scaling_factor``, summed in float32, plus the
  shared expert (a SwiGLU MLP of ``moe_intermediate_size * num_shared_experts``);
* final RMSNorm, ``lm_head`` (no bias), logits in float32.

Attention is block-causal: bidirectional within a block, causal across blocks, with the block
length of the decoding run. The published ``generate`` counts blocks from position 0 (the
prompt's last block may hold the first generated positions); here the prompt is cut into
blocks from position 0 and the generated positions into blocks from the first generated token
(the explorer's blocks), which is the same whenever the prompt's length is a multiple of the
block length (``BlockContext.block_ids``). Since a block never sees a later one, the finished
blocks (the prompt and every block before the one being decoded) are a KV cache
(``BlockContext``): their keys, values and logits are kept and only the rest is recomputed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import RMSNorm

FAMILY = "llada2"
ARCHITECTURE = "LLaDA2MoeModelLM"
MODEL_TYPE = "llada2_moe"
OPTIONAL_KEYS = ("rope_scaling", "mask_token_id", "eos_token_id", "head_dim")  # left out of config.json when unset
DEFAULT_BLOCK_LENGTH = 32  # the published generate's block_length, for a forward without a run's context
AUTO_MAP = {
    "AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
    "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
    "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM",
}


def is_llada2_config(raw: dict[str, Any]) -> bool:
    archs = raw.get("architectures")
    return str(raw.get("model_type", "")) == MODEL_TYPE or (isinstance(archs, list) and ARCHITECTURE in archs)


@dataclass
class Config:
    """config.json of a LLaDA2 checkpoint: ``LLaDA2MoeConfig``'s keys and defaults (the
    published configuration file's; a key a config.json leaves out takes these)."""

    vocab_size: int = 30592
    hidden_size: int = 1024
    intermediate_size: Optional[int] = None
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: int = 0
    hidden_act: str = "silu"
    use_qkv_bias: bool = False
    use_qk_norm: bool = True
    use_bias: bool = True
    rms_norm_eps: float = 1e-5
    norm_head: bool = False
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 16384
    rope_theta: float = 10000.0
    rope_scaling: Optional[dict] = None
    use_sliding_window: bool = False
    pad_token_id: Optional[int] = 126081
    eos_token_id: Optional[int] = None
    mask_token_id: Optional[int] = None
    num_experts: Optional[int] = 16
    num_shared_experts: Optional[int] = 0
    num_experts_per_tok: int = 2
    n_group: int = 8
    topk_group: int = 4
    routed_scaling_factor: float = 2.5
    moe_intermediate_size: Optional[int] = None
    first_k_dense_replace: int = 0
    head_dim: Optional[int] = None
    partial_rotary_factor: float = 0.5
    score_function: str = "sigmoid"  # LLaDA2.0's config.json names it; the published gate always uses sigmoid

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Config":
        """From config.json's dict (unknown keys ignored); ValueError naming the key when a
        value is one the published code would compute otherwise or not at all."""
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in raw.items() if k in known})
        cfg.validate()
        return cfg

    def to_json(self) -> dict[str, Any]:
        """The official config.json (architectures, auto_map, model_type, then the keys)."""
        keys = {k: v for k, v in asdict(self).items() if v is not None or k not in OPTIONAL_KEYS}
        return {"architectures": [ARCHITECTURE], "auto_map": dict(AUTO_MAP), "model_type": MODEL_TYPE,
                **keys, "torch_dtype": "float32"}

    @property
    def n_layers(self) -> int:  # the names the DLLM reads
        return self.num_hidden_layers

    @property
    def max_sequence_length(self) -> int:
        return self.max_position_embeddings

    @property
    def dim(self) -> int:
        """Per-head dimension (``head_dim``, else hidden_size / heads)."""
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def rope_dim(self) -> int:
        return int(self.dim * self.partial_rotary_factor)

    def moe_layer(self, layer: int) -> bool:
        return self.num_experts is not None and layer >= self.first_k_dense_replace

    @property
    def shared_experts(self) -> int:
        return self.num_shared_experts or 0

    def validate(self) -> None:
        def whole(v: Any, low: int = 1) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= low

        bad = []
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                    "max_position_embeddings", "num_experts_per_tok", "n_group", "topk_group"):
            if not whole(getattr(self, key)):
                bad.append(f"{key}={getattr(self, key)!r} (a whole number above 0)")
        for key in ("first_k_dense_replace",):
            if not whole(getattr(self, key), 0):
                bad.append(f"{key}={getattr(self, key)!r} (a whole number >= 0)")
        for key in ("rope_theta", "rms_norm_eps", "routed_scaling_factor", "partial_rotary_factor"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
                bad.append(f"{key}={v!r} (a number above 0)")
        if bad:
            raise ValueError("; ".join(bad))
        if self.hidden_act != "silu":
            bad.append(f"hidden_act={self.hidden_act!r} (supported: 'silu')")
        if self.rope_scaling is not None:
            bad.append(f"rope_scaling={self.rope_scaling!r} (supported: null)")
        if self.use_sliding_window:
            bad.append("use_sliding_window=true (supported: false)")
        if self.norm_head:
            bad.append("norm_head=true (the published modeling code has no normalised head; supported: false)")
        if not self.use_qk_norm:
            bad.append("use_qk_norm=false (the published modeling code always normalises q and k; supported: true)")
        if self.score_function != "sigmoid":
            bad.append(f"score_function={self.score_function!r} (the published router uses sigmoid)")
        if self.head_dim is not None and not whole(self.head_dim):
            bad.append(f"head_dim={self.head_dim!r} (a whole number above 0, or null)")
        elif self.head_dim is None and self.hidden_size % self.num_attention_heads:
            bad.append(f"hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                       f"{self.num_attention_heads} (and head_dim is not given)")
        if self.num_attention_heads % self.num_key_value_heads:
            bad.append(f"num_attention_heads={self.num_attention_heads} is not divisible by num_key_value_heads="
                       f"{self.num_key_value_heads}")
        if not bad and (self.rope_dim < 2 or self.rope_dim % 2 or self.rope_dim > self.dim):
            bad.append(f"partial_rotary_factor={self.partial_rotary_factor} gives {self.rope_dim} rotary dimensions "
                       f"of {self.dim} (an even number, 2..head_dim)")
        dense = self.num_experts is None or self.first_k_dense_replace > 0
        if dense and not whole(self.intermediate_size):
            bad.append(f"intermediate_size={self.intermediate_size!r} (the dense layers need a whole number above 0)")
        if self.num_experts is not None:
            bad += self._moe_problems(whole)
        if bad:
            raise ValueError("; ".join(bad))

    def _moe_problems(self, whole) -> list[str]:
        bad = []
        if not whole(self.num_experts):
            return [f"num_experts={self.num_experts!r} (a whole number above 0, or null for no experts)"]
        if not whole(self.moe_intermediate_size):
            bad.append(f"moe_intermediate_size={self.moe_intermediate_size!r} (a whole number above 0)")
        if self.num_shared_experts is not None and not whole(self.num_shared_experts, 0):
            bad.append(f"num_shared_experts={self.num_shared_experts!r} (a whole number >= 0)")
        if self.num_experts % self.n_group or self.num_experts // self.n_group < 2:
            bad.append(f"num_experts={self.num_experts} in n_group={self.n_group} groups (the router scores a group "
                       "by its two best experts: at least 2 experts a group, the same number in each)")
        if self.topk_group > self.n_group:
            bad.append(f"topk_group={self.topk_group} > n_group={self.n_group}")
        elif self.num_experts_per_tok > self.topk_group * (self.num_experts // self.n_group):
            bad.append(f"num_experts_per_tok={self.num_experts_per_tok} is more than the {self.topk_group} groups "
                       "kept hold")
        return bad


# --- the block-causal context of a run, with its KV cache of finished blocks ------------------

class BlockContext:
    """What a forward needs beyond the tokens in a block-causal run: the block length, the
    prompt's length (the prompt is cut into blocks from position 0, the generation from its
    first token), and, with ``kv``, the cache of finished blocks. The engine sets ``frozen``
    (the positions, from 0, that no later step will change) before each forward; the cache then
    keeps those positions' keys, values and logits and the next forward recomputes only the
    positions after them. A cache that no longer matches the tokens it is given is dropped."""

    def __init__(self, block_length: int, prompt_length: int = 0, kv: bool = True):
        if block_length < 1 or prompt_length < 0:
            raise ValueError(f"block context: block_length {block_length}, prompt_length {prompt_length}")
        self.block_length, self.prompt_length, self.kv = int(block_length), int(prompt_length), kv
        self.frozen = 0
        self.clear()

    def clear(self) -> None:
        self.tokens: Optional[torch.Tensor] = None  # [B, n] the cached positions' tokens
        self.keys: list[torch.Tensor] = []  # per layer [B, KV, n, D]
        self.values: list[torch.Tensor] = []
        self.logits: Optional[torch.Tensor] = None  # [B, n - prompt_length, V] (rows from the prompt's end)
        self.rows_computed = 0  # rows the last forward computed (the rest came from the cache)

    @property
    def cached(self) -> int:
        return 0 if self.tokens is None else self.tokens.shape[1]

    def block_ids(self, length: int, device) -> torch.Tensor:
        """Block index of positions ``0..length-1``: the prompt's from 0 in blocks of
        ``block_length``, the generated positions' from the prompt's end."""
        pos = torch.arange(length, device=device)
        B, P = self.block_length, self.prompt_length
        gen = (P + B - 1) // B + torch.div(pos - P, B, rounding_mode="floor")
        return torch.where(pos < P, torch.div(pos, B, rounding_mode="floor"), gen)

    def boundary(self, limit: int) -> int:
        """The last block boundary at or before ``limit`` (positions before it are whole blocks)."""
        P, B = self.prompt_length, self.block_length
        if limit >= P:
            return P + (limit - P) // B * B
        return limit // B * B

    def reusable(self, tokens: torch.Tensor, logits_from: int) -> int:
        """How many leading positions of ``tokens`` come from the cache this time (dropping a
        cache that does not match them, or anything past ``frozen``)."""
        n = self.cached
        if not self.kv or n == 0:
            return 0
        if (tokens.shape[0] != self.tokens.shape[0] or logits_from != self.prompt_length
                or n > tokens.shape[1] or not torch.equal(tokens[:, :n], self.tokens)):
            self.clear()
            return 0
        keep = min(n, self.boundary(self.frozen))
        if keep < n:
            self.truncate(keep)
        return keep

    def truncate(self, n: int) -> None:
        if n == 0:
            self.clear()
            return
        self.tokens = self.tokens[:, :n]
        self.keys = [k[:, :, :n] for k in self.keys]
        self.values = [v[:, :, :n] for v in self.values]
        if self.logits is not None:
            self.logits = self.logits[:, : max(n - self.prompt_length, 0)]

    def target(self, length: int) -> int:
        """Positions (from 0) the cache should hold after a forward over ``length`` positions."""
        return self.boundary(min(self.frozen, length)) if self.kv else 0


# --- the network ---------------------------------------------------------------------------

def rope_tables(dim: int, theta: float, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``[length, dim]`` in float32 for half-rotation RoPE over ``dim`` dimensions."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.int64).float() / dim))
    freqs = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on the first ``cos.shape[-1]`` dimensions of ``x`` ``[B, H, T, D]``, in x's dtype
    (cos/sin cast to it, as the published code does); the other dimensions pass unchanged."""
    r = cos.shape[-1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    rot, rest = x[..., :r], x[..., r:]
    half = r // 2
    rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
    return torch.cat((rot * cos + rotated * sin, rest), dim=-1)


class MLP(nn.Module):
    """SwiGLU: ``down_proj(silu(gate_proj(x)) * up_proj(x))``, no biases."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Gate(nn.Module):
    """The router: float32 logits, sigmoid scores, group-limited top-k over scores + expert_bias,
    weights = the chosen experts' scores (normalised when top_k > 1) x routed_scaling_factor."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.num_experts, cfg.hidden_size))
        self.register_buffer("expert_bias", torch.zeros(cfg.num_experts))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``h`` ``[N, d]`` -> (expert indices ``[N, k]``, float32 weights ``[N, k]``)."""
        cfg = self.cfg
        scores = torch.sigmoid(F.linear(h.float(), self.weight.float()))
        choice = scores + self.expert_bias
        n = choice.shape[0]
        grouped = choice.view(n, cfg.n_group, -1)
        group_score = grouped.topk(2, dim=-1).values.sum(-1)
        groups = group_score.topk(cfg.topk_group, dim=-1, sorted=False).indices
        keep = torch.zeros_like(group_score).scatter_(1, groups, 1.0).bool()
        keep = keep.unsqueeze(-1).expand_as(grouped).reshape(n, -1)
        idx = choice.masked_fill(~keep, float("-inf")).topk(cfg.num_experts_per_tok, dim=-1).indices
        weight = scores.gather(1, idx)
        if cfg.num_experts_per_tok > 1:
            weight = weight / (weight.sum(-1, keepdim=True) + 1e-20)
        return idx, weight * cfg.routed_scaling_factor


class MoE(nn.Module):
    """Routed experts (each token through its top-k, weighted and summed in float32) plus the shared expert."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.experts = nn.ModuleList(MLP(cfg.hidden_size, cfg.moe_intermediate_size) for _ in range(cfg.num_experts))
        self.gate = Gate(cfg)
        if cfg.shared_experts:
            self.shared_experts = MLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.shared_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        idx, weight = self.gate(flat)
        picked = torch.zeros(*idx.shape, flat.shape[-1], dtype=torch.float32, device=flat.device)
        for e in torch.unique(idx).tolist():
            rows, slots = (idx == e).nonzero(as_tuple=True)
            picked[rows, slots] = self.experts[e](flat[rows]).float()
        y = (picked * weight.unsqueeze(-1)).sum(1).to(x.dtype).view_as(x)
        if hasattr(self, "shared_experts"):
            y = y + self.shared_experts(x)
        return y


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.dim
        self.query_key_value = nn.Linear(cfg.hidden_size, (H + 2 * KV) * D, bias=cfg.use_qkv_bias)
        self.query_layernorm = RMSNorm(D, cfg.rms_norm_eps)
        self.key_layernorm = RMSNorm(D, cfg.rms_norm_eps)
        self.dense = nn.Linear(H * D, cfg.hidden_size, bias=cfg.use_bias)

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Queries ``[B, H, T, D]``, keys and values ``[B, KV, T, D]`` of the rows of ``x``."""
        cfg = self.cfg
        Bsz, T, _ = x.shape
        H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.dim
        q, k, v = self.query_key_value(x).view(Bsz, T, H + 2 * KV, D).split([H, KV, KV], dim=-2)
        q = self.query_layernorm(q.transpose(1, 2))
        k = self.key_layernorm(k.transpose(1, 2))
        return apply_partial_rope(q, cos, sin), apply_partial_rope(k, cos, sin), v.transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention of the query rows over all keys where ``mask`` ``[Tq, Tk]`` allows, then ``dense``."""
        gqa = self.cfg.num_key_value_heads != self.cfg.num_attention_heads
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        Bsz, H, T, D = y.shape
        return self.dense(y.transpose(1, 2).reshape(Bsz, T, H * D))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Config, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attention = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MoE(cfg) if cfg.moe_layer(layer) else MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, cos, sin, mask, past: Optional[tuple[torch.Tensor, torch.Tensor]] = None):
        """The rows of ``x`` (after ``past``'s cached positions); returns (output, their keys, values)."""
        q, k, v = self.attention.qkv(self.input_layernorm(x), cos, sin)
        keys = k if past is None else torch.cat([past[0], k], dim=2)
        values = v if past is None else torch.cat([past[1], v], dim=2)
        h = x + self.attention.attend(q, keys, values, mask)
        return h + self.mlp(self.post_attention_layernorm(h)), k, v


class Backbone(nn.Module):
    """``model.*`` of the checkpoint: word_embeddings, layers, norm."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LLaDA2(nn.Module):
    """LLaDA2 mask predictor: tokens ``[B, T]`` -> logits ``[B, T - logits_from, vocab]`` (float32),
    block-causal. Parameter names are the checkpoint's (``model.layers.0.attention.query_key_value.weight``,
    ``model.layers.1.mlp.gate.expert_bias``, ``lm_head.weight``), so loading is a plain ``load_state_dict``."""

    family = FAMILY

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self._rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._last_flops: Optional[float] = None

    def block_context(self, block_length: int, prompt_length: int = 0, kv: bool = True) -> BlockContext:
        """A run's block-causal context (see ``BlockContext``)."""
        return BlockContext(block_length, prompt_length, kv)

    def rope(self, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._rope is None or self._rope[0].shape[0] < length or self._rope[0].device != torch.device(device):
            size = max(length, min(self.cfg.max_position_embeddings, 4096))
            with torch.inference_mode(False):
                self._rope = rope_tables(self.cfg.rope_dim, self.cfg.rope_theta, size, device)
        return self._rope[0][:length], self._rope[1][:length]

    def head(self, h: torch.Tensor) -> torch.Tensor:
        h = self.model.norm(h)
        weight = self.model.word_embeddings.weight if self.cfg.tie_word_embeddings else self.lm_head.weight
        return F.linear(h, weight).float()

    def forward(self, tokens: torch.Tensor, cache: Any = None, logits_from: int = 0,
                blocks: Optional[BlockContext] = None) -> torch.Tensor:
        """Logits of rows ``logits_from..T-1``. ``blocks`` gives the block length and prompt
        length (default: blocks of 32 from position 0, no cache); with its KV cache the
        positions it holds are not recomputed, and the positions it is told are final are kept."""
        if cache is not None:
            raise ValueError("cache: dLLM-Cache is not available for LLaDA2 (its finished blocks are a KV cache)")
        T = tokens.shape[1]
        if T > self.cfg.max_position_embeddings:
            raise ValueError(f"input length {T} exceeds the model's context (max_position_embeddings="
                             f"{self.cfg.max_position_embeddings})")
        ctx = blocks or BlockContext(DEFAULT_BLOCK_LENGTH, 0, kv=False)
        n0 = ctx.reusable(tokens, logits_from)
        keep = max(ctx.target(T), n0)
        ids = ctx.block_ids(T, tokens.device)
        mask = ids[n0:, None] >= ids[None, :]
        cos, sin = self.rope(T, tokens.device)
        x = self.model.word_embeddings(tokens[:, n0:])
        new_k, new_v = [], []
        for i, layer in enumerate(self.model.layers):
            past = (ctx.keys[i], ctx.values[i]) if n0 else None
            x, k, v = layer(x, cos[n0:], sin[n0:], mask, past)
            new_k.append(k)
            new_v.append(v)
        first = max(logits_from, n0)
        logits = self.head(x[:, first - n0:])
        self._last_flops = self.flops(tokens.shape[0], T - n0, T, T - first)
        ctx.rows_computed = T - n0
        if keep > n0:
            self._store(ctx, tokens, n0, keep, new_k, new_v, logits, first)
        if n0 > logits_from:
            logits = torch.cat([ctx.logits[:, : n0 - logits_from], logits], dim=1)
        return logits

    @staticmethod
    def _store(ctx: BlockContext, tokens, n0: int, keep: int, new_k, new_v, logits, first: int) -> None:
        """Append positions ``n0..keep-1`` (final from now on) to the cache."""
        ctx.tokens = tokens[:, :keep].clone()
        ctx.keys = [k[:, :, : keep - n0] if not n0 else torch.cat([c, k[:, :, : keep - n0]], dim=2)
                    for c, k in zip(ctx.keys or [None] * len(new_k), new_k)]
        ctx.values = [v[:, :, : keep - n0] if not n0 else torch.cat([c, v[:, :, : keep - n0]], dim=2)
                      for c, v in zip(ctx.values or [None] * len(new_v), new_v)]
        rows = logits[:, : max(keep - first, 0)]
        ctx.logits = rows if ctx.logits is None or not n0 else torch.cat([ctx.logits, rows], dim=1)

    def flops(self, batch: int, rows: int, keys: int, head_rows: int) -> float:
        """Matmul FLOPs of a forward computing ``rows`` rows against ``keys`` keys: projections,
        attention, per token the router, its top-k experts and the shared expert (or the dense MLP)."""
        cfg = self.cfg
        d, H, KV, D = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.dim
        total = 0.0
        for i in range(cfg.num_hidden_layers):
            attn = 2 * rows * d * (H + 2 * KV) * D + rows * (4 * keys * H * D) + 2 * rows * H * D * d
            if cfg.moe_layer(i):
                ffn = 2 * rows * d * cfg.num_experts + 6 * rows * d * cfg.moe_intermediate_size * (
                    cfg.num_experts_per_tok + cfg.shared_experts)
            else:
                ffn = 6 * rows * d * cfg.intermediate_size
            total += attn + ffn
        return float(batch * (total + 2 * head_rows * d * cfg.vocab_size))

    def forward_flops(self, batch: int, rows: int, cache: Any = None, logits_from: int = 0) -> float:
        """FLOPs of the last forward (what the trace reports per step), or of a full one."""
        if self._last_flops is not None:
            return self._last_flops
        return self.flops(batch, rows, rows, rows - logits_from)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def parameter_count(cfg: Config) -> int:
    """Parameters of the network for ``cfg``, from its shapes alone."""
    with torch.device("meta"):
        return LLaDA2(cfg).num_parameters()


def build(cfg: Config) -> LLaDA2:
    """The network on the meta device (``load_state_dict(..., assign=True)`` gives it weights)."""
    with torch.device("meta"):
        return LLaDA2(cfg)


def expected_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Every checkpoint tensor (parameters and the routers' ``expert_bias``) and its shape."""
    return {name: tuple(t.shape) for name, t in build(cfg).state_dict().items()}
