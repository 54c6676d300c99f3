"""Our bidirectional transformer for the LLaDA family, readable in one sitting.

It reads LLaDA's official ``config.json`` field names and safetensors tensor names, so
``GSAI-ML/LLaDA-8B-Instruct`` and friends load without remote code. Dream-v0 is the same
network under config flags (grouped-query attention ``n_kv_heads``, q/k/v biases
``include_qkv_bias``, its RoPE theta and norm eps); ``dream.py`` maps its config keys and
Qwen2 tensor names onto these, and the loaded model reads its logits shifted by one. Each
block exposes its pieces (``qkv``, ``attend``, ``ffn``) so that a feature cache can run
attention and the FFN for a subset of rows (the cache hooks are marked ``CACHE HOOK``);
biases and GQA go through the same pieces, cached or not.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # the cache imports nothing from here; avoid a cycle at run time
    from ..cache import FeatureCache, LayerStats, LayerStore


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


def gather_rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` ([B, k]) of ``t`` ([B, T, ...]) -> [B, k, ...]."""
    shape = idx.shape + t.shape[2:]
    return t.gather(1, idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(shape))


def scatter_rows(t: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor) -> None:
    """In place: ``t[b, idx[b, j]] = rows[b, j]``."""
    t.scatter_(1, idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(rows.shape), rows)


class Block(nn.Module):
    """One LLaDA block: h = x + attn(attn_norm(x)); out = h + ffn(ff_norm(h))."""

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
    # -------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        n = self.attn_norm(x)
        h = x + self.attend(self.q(n, cos, sin), self.k(n, cos, sin), self.v(n))
        return h + self.ffn(h)

    # --- CACHE HOOK: dLLM-Cache (slowfast/cache.py describes the four cases) ---------------
    def forward_cached(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, store: "LayerStore",
                       refresh_prompt: bool, refresh_response: bool, rho: float, P: int,
                       gen_length: int) -> tuple[torch.Tensor, "LayerStats"]:
        """The block on ``x`` = [prompt rows (P) | response rows present (R)], reusing ``store``."""
        from ..cache import LayerStats

        B, T, _ = x.shape
        R = T - P
        xp, xr = x[:, :P], x[:, P:]
        st = LayerStats()
        if refresh_prompt and refresh_response:
            n = self.attn_norm(x)
            k, v = self.k(n, cos, sin), self.v(n)
            a = self.attend(self.q(n, cos, sin), k, v)
            h = x + a
            f = self.ffn(h)
            store.k_p, store.v_p = k[:, :, :P].clone(), v[:, :, :P].clone()
            store.attn_p, store.ffn_p = a[:, :P].clone(), f[:, :P].clone()
            if store.k_r is None:
                store.k_r = k.new_zeros(B, k.shape[1], gen_length, k.shape[3])
                store.v_r = torch.zeros_like(store.k_r)
                store.attn_r = a.new_zeros(B, gen_length, a.shape[2])
                store.ffn_r = torch.zeros_like(store.attn_r)
            store.k_r[:, :, :R], store.v_r[:, :, :R] = k[:, :, P:], v[:, :, P:]
            store.attn_r[:, :R], store.ffn_r[:, :R] = a[:, P:], f[:, P:]
            st.prompt_recomputed, st.response_recomputed = B * P, B * R
            st.flops = layer_flops(self.cfg, B * T, 0, B * T, T, B * T)
            return h + f, st

        if refresh_response:  # response rows recomputed against the cached prompt K/V
            out_p = xp + store.attn_p + store.ffn_p
            st.prompt_reused = B * P
            n = self.attn_norm(xr)
            kr, vr = self.k(n, cos[P:], sin[P:]), self.v(n)
            keys = torch.cat([store.k_p, kr], dim=2)
            values = torch.cat([store.v_p, vr], dim=2)
            ar = self.attend(self.q(n, cos[P:], sin[P:]), keys, values)
            hr = xr + ar
            fr = self.ffn(hr)
            store.k_r[:, :, :R], store.v_r[:, :, :R] = kr, vr
            store.attn_r[:, :R], store.ffn_r[:, :R] = ar, fr
            st.response_recomputed = B * R
            st.flops = layer_flops(self.cfg, B * R, 0, B * R, T, B * R)
            return torch.cat([out_p, hr + fr], dim=1), st

        # The response is not refreshed: V-verify (rho > 0) picks the response rows whose V
        # moved most; their Q/K, attention and FFN are recomputed, the whole response V is
        # replaced, and everything else is reused. rho = 0 is pure reuse (V untouched).
        # When the prompt refreshes in this forward, its rows are recomputed too and attend
        # to the verified response K/V, in one attention call with the picked rows.
        picked = int(R * rho) if rho > 0 else 0
        idx = None
        q_sel = None
        if rho > 0:
            nr = self.attn_norm(xr)
            vr = self.v(nr)
            old = store.v_r[:, :, :R]
            sim = F.cosine_similarity(vr.transpose(1, 2).reshape(B, R, -1).float(),
                                      old.transpose(1, 2).reshape(B, R, -1).float(), dim=-1)
            store.v_r[:, :, :R] = vr
            st.flops += layer_flops(self.cfg, 0, B * R, 0, 0, 0)
            if picked > 0:
                low, idx = sim.topk(picked, dim=1, largest=False)
                st.similarity_threshold = float(low.max())
                n_sel = gather_rows(nr, idx)
                cos_sel, sin_sel = cos[P + idx].unsqueeze(1), sin[P + idx].unsqueeze(1)  # [B, 1, k, D]
                q_sel = self.q(n_sel, cos_sel, sin_sel)
                k_sel = self.k(n_sel, cos_sel, sin_sel)
                k_r = store.k_r[:, :, :R].transpose(1, 2)  # [B, R, H, D] view
                scatter_rows(k_r, idx, k_sel.transpose(1, 2))

        if refresh_prompt:
            n = self.attn_norm(xp)
            kp, vp = self.k(n, cos[:P], sin[:P]), self.v(n)
            keys = torch.cat([kp, store.k_r[:, :, :R]], dim=2)
            values = torch.cat([vp, store.v_r[:, :, :R]], dim=2)
            qp = self.q(n, cos[:P], sin[:P])
            a = self.attend(qp if q_sel is None else torch.cat([qp, q_sel], dim=2), keys, values)
            ap = a[:, :P]
            hp = xp + ap
            h_all = hp if idx is None else torch.cat([hp, gather_rows(xr, idx) + a[:, P:]], dim=1)
            f = self.ffn(h_all)
            fp = f[:, :P]
            if idx is not None:
                scatter_rows(store.attn_r[:, :R], idx, a[:, P:])
                scatter_rows(store.ffn_r[:, :R], idx, f[:, P:])
            store.k_p, store.v_p, store.attn_p, store.ffn_p = kp, vp, ap, fp
            out_p = hp + fp
            st.prompt_recomputed = B * P
            st.flops += layer_flops(self.cfg, B * P + B * picked, 0, B * P + B * picked, T, B * P + B * picked)
        else:
            out_p = xp + store.attn_p + store.ffn_p
            st.prompt_reused = B * P
            if idx is not None:
                keys = torch.cat([store.k_p, store.k_r[:, :, :R]], dim=2)
                values = torch.cat([store.v_p, store.v_r[:, :, :R]], dim=2)
                a_sel = self.attend(q_sel, keys, values)
                f_sel = self.ffn(gather_rows(xr, idx) + a_sel)
                scatter_rows(store.attn_r[:, :R], idx, a_sel)
                scatter_rows(store.ffn_r[:, :R], idx, f_sel)
                st.flops += layer_flops(self.cfg, B * picked, 0, B * picked, T, B * picked)
        st.response_recomputed, st.response_reused = B * picked, B * (R - picked)
        return torch.cat([out_p, xr + store.attn_r[:, :R] + store.ffn_r[:, :R]], dim=1), st


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
            if cache is None:
                x = block(x, cos, sin)
                continue
            refresh_prompt, refresh_response = cache.plan(i)
            x, stats = block.forward_cached(x, cos, sin, cache.layers[i], refresh_prompt, refresh_response,
                                            cache.settings.rho, cache.prompt_len, cache.gen_length)
            cache.last_stats.append(stats)
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
