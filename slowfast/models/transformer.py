"""Our bidirectional transformer for the LLaDA family, readable in one sitting.

It reads LLaDA's official ``config.json`` field names and safetensors tensor names, so
``GSAI-ML/LLaDA-8B-Instruct`` and friends load without remote code. Dream-v0 is the same
network under config flags (grouped-query attention ``n_kv_heads``, q/k/v biases
``include_qkv_bias``, its RoPE theta and norm eps); ``dream.py`` maps its config keys and
Qwen2 tensor names onto these, and the loaded model reads its logits shifted by one. Each
block exposes its pieces (``attn_norm``, ``q``/``k``/``v``, ``attend``, ``ffn``, ``flops``;
marked ``CACHE HOOK``) so that dLLM-Cache (``slowfast/cache.py``, ``run_block``) can run
attention and the FFN for a subset of rows; biases and GQA go through the same pieces,
cached or not.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..cache import FeatureCache, run_block


@dataclass
class ModelConfig:
    """Official LLaDA ``config.json`` field names (Dream's are mapped onto them in dream.py);
    unknown fields are ignored."""

    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: Optional[int] = None  # None: same as n_heads
    n_layers: int = 32
    mlp_hidden_size: Optional[int] = None  # None: mlp_ratio * d_model
    mlp_ratio: int = 4
    vocab_size: int = 126464
    embedding_size: Optional[int] = None  # rows of wte / the head; None: vocab_size
    max_sequence_length: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    include_bias: bool = False
    include_qkv_bias: bool = False
    weight_tying: bool = False
    mask_token_id: int = 126336
    eos_token_id: int = 126081
    pad_token_id: Optional[int] = None
    activation_type: str = "silu"
    layer_norm_type: str = "rms"
    block_type: str = "llama"
    rope: bool = True
    alibi: bool = False
    attention_layer_norm: bool = False
    input_emb_norm: bool = False
    scale_logits: bool = False
    model_type: str = "llada"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hidden_size(self) -> int:
        return self.mlp_hidden_size or self.mlp_ratio * self.d_model

    @property
    def rows(self) -> int:
        return self.embedding_size or self.vocab_size

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in raw.items() if k in known})
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """Refuse configurations this code would silently compute wrongly."""
        unsupported = []
        if self.block_type != "llama":
            unsupported.append(f"block_type={self.block_type!r} (supported: 'llama')")
        if self.activation_type not in ("silu", "swiglu"):
            unsupported.append(f"activation_type={self.activation_type!r} (supported: 'silu')")
        if self.layer_norm_type != "rms":
            unsupported.append(f"layer_norm_type={self.layer_norm_type!r} (supported: 'rms')")
        if not self.rope or self.alibi:
            unsupported.append("position encoding other than RoPE (rope=true, alibi=false)")
        if self.attention_layer_norm or self.input_emb_norm or self.scale_logits:
            unsupported.append("attention_layer_norm / input_emb_norm / scale_logits")
        if self.d_model % self.n_heads or self.n_heads % self.kv_heads:
            unsupported.append(
                f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.kv_heads} "
                "(d_model must divide by n_heads, n_heads by n_kv_heads)"
            )
        if unsupported:
            raise ValueError("unsupported model configuration: " + "; ".join(unsupported))


class RMSNorm(nn.Module):
    """RMSNorm normalised in float32, cast back, then scaled by the weight: LLaDA's order
    (in bf16 the weight multiplies the rounded value; identical in float32)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_tables(head_dim: int, theta: float, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (float32, ``[length, head_dim]``) for half-rotation RoPE."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: ``[B, H, T, D]``; cos/sin: ``[T, D]`` rows for x's true positions. Full precision."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


def layer_flops(cfg: ModelConfig, qkv_rows: int, v_rows: int, query_rows: int, keys: int, ffn_rows: int) -> float:
    """Matmul FLOPs of one block: Q/K/V projections, V-only rows (V-verify), attention
    (scores and weighted sum) with the output projection, and the SwiGLU FFN."""
    d, kv = cfg.d_model, cfg.kv_heads * cfg.head_dim
    return float(
        2 * qkv_rows * d * (d + 2 * kv)
        + 2 * v_rows * d * kv
        + query_rows * (4 * keys * d + 2 * d * d)
        + 6 * ffn_rows * d * cfg.hidden_size
    )


class Block(nn.Module):
    """One LLaDA block: h = x + attn(attn_norm(x)); out = h + ffn(ff_norm(h)). Its pieces are
    the ones dLLM-Cache drives (``cache.Block``, a protocol the cache declares)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, kv_dim, bias = cfg.d_model, cfg.kv_heads * cfg.head_dim, cfg.include_bias
        qkv_bias = bias or cfg.include_qkv_bias
        self.attn_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=qkv_bias)
        self.k_proj = nn.Linear(d, kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d, kv_dim, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=bias)
        self.ff_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.ff_proj = nn.Linear(d, cfg.hidden_size, bias=bias)  # gate
        self.up_proj = nn.Linear(d, cfg.hidden_size, bias=bias)
        self.ff_out = nn.Linear(cfg.hidden_size, d, bias=bias)

    # --- CACHE HOOK: each piece runs on any subset of rows -------------------------------
    def heads(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """``[B, T, n*D]`` -> ``[B, n, T, D]``."""
        B, T, _ = t.shape
        return t.view(B, T, n, self.cfg.head_dim).transpose(1, 2)

    def q(self, n: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return apply_rope(self.heads(self.q_proj(n), self.cfg.n_heads), cos, sin)

    def k(self, n: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return apply_rope(self.heads(self.k_proj(n), self.cfg.kv_heads), cos, sin)

    def v(self, n: torch.Tensor) -> torch.Tensor:
        return self.heads(self.v_proj(n), self.cfg.kv_heads)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Bidirectional attention of the query rows ``q`` over all keys; after ``attn_out``."""
        gqa = self.cfg.kv_heads != self.cfg.n_heads
        y = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        B, H, T, D = y.shape
        return self.attn_out(y.transpose(1, 2).reshape(B, T, H * D))

    def ffn(self, h: torch.Tensor) -> torch.Tensor:
        """SwiGLU FFN output (before the residual addition) for the rows of ``h``."""
        m = self.ff_norm(h)
        return self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m))

    def flops(self, qkv_rows: int, v_rows: int, query_rows: int, keys: int, ffn_rows: int) -> float:
        """``layer_flops`` of this block's configuration."""
        return layer_flops(self.cfg, qkv_rows, v_rows, query_rows, keys, ffn_rows)
    # -------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        n = self.attn_norm(x)
        h = x + self.attend(self.q(n, cos, sin), self.k(n, cos, sin), self.v(n))
        return h + self.ffn(h)


class Transformer(nn.Module):
    """LLaDA-family mask predictor: tokens ``[B, T]`` -> logits ``[B, T, vocab]``.

    Parameter names below mirror the checkpoint's ``model.transformer.*`` names (without
    the leading ``model.``), so loading is a plain ``load_state_dict``.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.rows, cfg.d_model),
                blocks=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers)),
                ln_f=RMSNorm(cfg.d_model, cfg.rms_norm_eps),
            )
        )
        if not cfg.weight_tying:
            self.transformer["ff_out"] = nn.Linear(cfg.d_model, cfg.rows, bias=cfg.include_bias)
        self._rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def rope(self, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for positions ``0..length-1``; built once, grown on demand (not a parameter)."""
        if self._rope is None or self._rope[0].shape[0] < length or self._rope[0].device != torch.device(device):
            size = max(length, min(self.cfg.max_sequence_length, 4096))
            with torch.inference_mode(False):  # normal tensors: usable when training later
                self._rope = rope_tables(self.cfg.head_dim, self.cfg.rope_theta, size, device)
        cos, sin = self._rope
        return cos[:length], sin[:length]

    def head(self, h: torch.Tensor) -> torch.Tensor:
        h = self.transformer["ln_f"](h)
        if self.cfg.weight_tying:
            logits = F.linear(h, self.transformer["wte"].weight)
        else:
            logits = self.transformer["ff_out"](h)
        return logits[..., : self.cfg.vocab_size]

    def forward(self, tokens: torch.Tensor, cache: Optional["FeatureCache"] = None,
                logits_from: int = 0) -> torch.Tensor:
        """Bidirectional forward over ``tokens`` at positions ``0..T-1``; logits for rows
        ``logits_from..T-1`` only (the prompt's logits are never needed). With ``cache``, the
        first ``cache.prompt_len`` rows are the prompt and features are reused per its plan."""
        T = tokens.shape[1]
        if T > self.cfg.max_sequence_length:
            raise ValueError(
                f"input length {T} exceeds the model's context (max_sequence_length="
                f"{self.cfg.max_sequence_length})"
            )
        cos, sin = self.rope(T, tokens.device)
        x = self.transformer["wte"](tokens)
        for i, block in enumerate(self.transformer["blocks"]):
            x = block(x, cos, sin) if cache is None else run_block(cache, i, block, x, cos, sin)
        return self.head(x[:, logits_from:])

    def forward_flops(self, batch: int, rows: int, cache: Optional["FeatureCache"] = None,
                      logits_from: int = 0) -> float:
        """Estimated matmul FLOPs of the last forward over ``batch`` x ``rows`` tokens."""
        head = 2.0 * batch * (rows - logits_from) * self.cfg.d_model * self.cfg.vocab_size
        if cache is not None and cache.last_stats:
            return sum(s.flops for s in cache.last_stats) + head
        n = batch * rows
        return self.cfg.n_layers * layer_flops(self.cfg, n, 0, n, rows, n) + head

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
