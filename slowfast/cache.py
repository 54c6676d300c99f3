"""dLLM-Cache (Liu et al. 2025): reuse of prompt and response features across forwards.

Per transformer layer, separately for the prompt rows and the response (generated) rows,
the cache keeps K, V, the attention output (after the output projection) and the FFN
output; the residual additions always run on the current hidden states. A refresh schedule
from the forward counter decides, per forward, which part is recomputed:

* both refresh: a full forward, every feature overwritten;
* response only: response rows recomputed against the cached prompt K/V;
* prompt only: prompt rows recomputed, and the response is V-verified as below in the
  same forward (with ``rho = 0`` reused as is); the prompt attends to the verified K/V;
* neither: V-verify. New V for every response row, cosine similarity to the cached V row
  by row, and only the ``int(rows * rho)`` least similar rows get Q, K, attention and FFN
  recomputed (RoPE at their true positions, against the full K/V); ``rho = 0`` is pure reuse
  and leaves the cached V untouched. These are the published dLLM-Cache hook's cases.

Layer 0 always refreshes fully unless ``refresh_first_layer`` is off (the paper's text).
Truncated forwards (SlowFast's fast stage) read and write only the response rows present;
cached features of rows cut off the input stay untouched. Every batch row (e.g. the
unconditional CFG pass) has its own cache.

Where the code lives: this module holds the whole algorithm. ``run_block`` is the cached
path of one transformer layer: it asks the schedule (``FeatureCache.plan``) which case
applies, runs that case's function (``refresh_all``, ``refresh_response``,
``refresh_prompt`` or ``reuse``; the last two share the V-verify step ``verify_response``)
over the block's pieces (the ``Block`` protocol: ``attn_norm``, ``q``/``k``/``v`` projections
with RoPE, ``attend`` with its output projection, ``ffn``, and ``flops`` for the cost), and
appends the layer's ``LayerStats`` to ``FeatureCache.last_stats``. The network calls
``run_block`` per layer (and sums the stats' FLOPs in ``forward_flops``); this module imports
nothing from the model. The engine calls ``begin_forward`` before each forward and reads ``summary()``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, ClassVar, Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from .params import CACHE, Param, dataclass_of_params, fill_defaults, shown, shown_name


@runtime_checkable
class Block(Protocol):
    """The pieces of a transformer layer that the cache drives (our transformer's ``Block`` has
    them): the attention's norm, RoPE'd queries and keys, values, attention with its output
    projection, the FFN (its norm inside), and the layer's FLOPs for a count of rows of each
    kind. The cache depends on these, not on the model."""

    attn_norm: Callable[[torch.Tensor], torch.Tensor]

    def q(self, n: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor: ...

    def k(self, n: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor: ...

    def v(self, n: torch.Tensor) -> torch.Tensor: ...

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...

    def ffn(self, h: torch.Tensor) -> torch.Tensor: ...

    def flops(self, qkv_rows: int, v_rows: int, query_rows: int, keys: int, ffn_rows: int) -> float: ...


@dataclass_of_params
class CacheSettings:
    """Refresh intervals and the V-verify ratio: the fields are ``params.CACHE`` (reference
    names accepted as aliases)."""

    PARAMS: ClassVar[tuple[Param, ...]] = CACHE

    def __post_init__(self) -> None:
        fill_defaults(self)
        for p in self.PARAMS:
            p.check(getattr(self, p.name))

    @classmethod
    def from_params(cls, params: Optional[dict[str, Any]] = None) -> "CacheSettings":
        if params is not None and not isinstance(params, dict):
            raise ValueError(f"cache: {shown(params)} is not allowed; it must be an object of cache parameters "
                             "(name: value), a cache preset's name, or null (off)")
        allowed = [f.name for f in fields(cls)]
        resolved: dict[str, Any] = {}
        for key, value in (params or {}).items():
            name = cls.ALIASES.get(key, key)
            if name not in allowed:
                raise ValueError(
                    f"{shown_name(key)}: unknown cache parameter; allowed: "
                    f"{', '.join(sorted(allowed + list(cls.ALIASES)))}"
                )
            resolved[name] = value
        return cls(**resolved)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def refresh(self, forward: int) -> tuple[bool, bool]:
        """(prompt, response) refresh for the 1-based forward counter."""
        return (forward - 1) % self.kp == 0, (forward - 1) % self.kr == 0


# The paper's settings (algorithms.md section 4), by name.
CACHE_PRESETS: dict[str, dict[str, Any]] = {
    "slowfast-gsm8k": dict(kp=15, kr=1, rho=0.0),
    "slowfast-headline": dict(kp=100, kr=5, rho=0.25),
    "slowfast-headline-long": dict(kp=500, kr=30, rho=0.25),
    "llada-gsm8k": dict(kp=50, kr=7, rho=0.25),
    "llada-demo": dict(kp=100, kr=7, rho=0.25),
    "dream-demo": dict(kp=100, kr=7, rho=0.25),  # dLLM-Cache's demo_Dream.py (Dream-v0-Instruct-7B)
}


@dataclass
class LayerStore:
    """One layer's cached features: [B, kv_heads, rows, head_dim] for K/V, [B, rows, d] else."""

    k_p: Optional[torch.Tensor] = None
    v_p: Optional[torch.Tensor] = None
    attn_p: Optional[torch.Tensor] = None
    ffn_p: Optional[torch.Tensor] = None
    k_r: Optional[torch.Tensor] = None
    v_r: Optional[torch.Tensor] = None
    attn_r: Optional[torch.Tensor] = None
    ffn_r: Optional[torch.Tensor] = None

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in vars(self).values() if t is not None]


@dataclass
class LayerStats:
    """What one layer did in one forward (rows summed over the batch)."""

    prompt_recomputed: int = 0
    prompt_reused: int = 0
    response_recomputed: int = 0
    response_reused: int = 0
    threshold: Optional[torch.Tensor] = None  # 0-dim, on the model's device: read once per forward
    flops: float = 0.0

    @property
    def similarity_threshold(self) -> Optional[float]:
        """The highest cosine similarity among the V-verified rows recomputed (None: none)."""
        return None if self.threshold is None else float(self.threshold)


@dataclass
class FeatureCache:
    """The cache of one generation: settings, forward counter, per-layer stores and stats."""

    settings: CacheSettings
    prompt_len: int
    gen_length: int
    n_layers: int
    forward: int = 0
    layers: list[LayerStore] = field(default_factory=list)
    last_stats: list[LayerStats] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.layers = [LayerStore() for _ in range(self.n_layers)]

    def begin_forward(self) -> None:
        """Advance the forward counter (a CFG pair in one batch counts once)."""
        self.forward += 1
        self.last_stats = []

    def plan(self, layer: int) -> tuple[bool, bool]:
        """(prompt refresh, response refresh) for ``layer`` in the current forward."""
        if self.forward == 1 or (layer == 0 and self.settings.refresh_first_layer):
            return True, True
        return self.schedule()

    def schedule(self) -> tuple[bool, bool]:
        """(prompt refresh, response refresh) of the current forward past its first layer."""
        return self.settings.refresh(self.forward)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self.layers for t in s.tensors())

    def clear(self) -> None:
        """Free every cached tensor (between generations)."""
        self.layers = [LayerStore() for _ in range(self.n_layers)]
        self.last_stats = []
        self.forward = 0

    def summary(self) -> dict[str, Any]:
        """Per-layer rows recomputed/reused and the implied similarity thresholds, for a StepRecord."""
        s = self.last_stats
        held = [x.threshold for x in s if x.threshold is not None]
        values = iter(torch.stack(held).tolist() if held else [])  # one device-to-host copy per forward
        return {
            "prompt_recomputed": [x.prompt_recomputed for x in s],
            "prompt_reused": [x.prompt_reused for x in s],
            "response_recomputed": [x.response_recomputed for x in s],
            "response_reused": [x.response_reused for x in s],
            "similarity_threshold": [None if x.threshold is None else next(values) for x in s],
        }


# --- the algorithm: one layer's cached forward, over the block's pieces ------------------------
# ``x`` is [prompt rows (P) | response rows present (R)]; ``cos``/``sin`` hold RoPE for the
# positions 0..P+R-1. Each case returns the layer's output and its LayerStats.


def gather_rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` ([B, k]) of ``t`` ([B, T, ...]) -> [B, k, ...]."""
    shape = idx.shape + t.shape[2:]
    return t.gather(1, idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(shape))


def scatter_rows(t: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor) -> None:
    """In place: ``t[b, idx[b, j]] = rows[b, j]``."""
    t.scatter_(1, idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(rows.shape), rows)


def refresh_all(block: Block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, store: LayerStore,
                P: int, gen_length: int) -> tuple[torch.Tensor, LayerStats]:
    """Both refresh: a full forward of the block; every cached feature is overwritten (the
    response stores are allocated for ``gen_length`` rows on first use)."""
    B, T, _ = x.shape
    R = T - P
    st = LayerStats()
    n = block.attn_norm(x)
    k, v = block.k(n, cos, sin), block.v(n)
    a = block.attend(block.q(n, cos, sin), k, v)
    h = x + a
    f = block.ffn(h)
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
    st.flops = block.flops(B * T, 0, B * T, T, B * T)
    return h + f, st


def refresh_response(block: Block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, store: LayerStore,
                     P: int) -> tuple[torch.Tensor, LayerStats]:
    """Response only: the response rows are recomputed against the cached prompt K/V; the
    prompt rows take their cached attention and FFN outputs."""
    B, T, _ = x.shape
    R = T - P
    xp, xr = x[:, :P], x[:, P:]
    st = LayerStats()
    out_p = xp + store.attn_p + store.ffn_p
    st.prompt_reused = B * P
    n = block.attn_norm(xr)
    kr, vr = block.k(n, cos[P:], sin[P:]), block.v(n)
    keys = torch.cat([store.k_p, kr], dim=2)
    values = torch.cat([store.v_p, vr], dim=2)
    ar = block.attend(block.q(n, cos[P:], sin[P:]), keys, values)
    hr = xr + ar
    fr = block.ffn(hr)
    store.k_r[:, :, :R], store.v_r[:, :, :R] = kr, vr
    store.attn_r[:, :R], store.ffn_r[:, :R] = ar, fr
    st.response_recomputed = B * R
    st.flops = block.flops(B * R, 0, B * R, T, B * R)
    return torch.cat([out_p, hr + fr], dim=1), st


def verify_response(block: Block, xr: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, store: LayerStore,
                    P: int, rho: float, st: LayerStats
                    ) -> tuple[int, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """V-verify, the step shared by ``refresh_prompt`` and ``reuse``: new V for every response
    row (it replaces the cached V), cosine similarity to the cached V row by row, and the
    ``int(R * rho)`` least similar rows picked; their K is recomputed into the store (RoPE at
    their true positions). ``rho = 0`` does nothing. Returns (rows picked per batch row, their
    indices ``[B, picked]``, their Q) with None for both when none is picked; adds to ``st``."""
    B, R, _ = xr.shape
    picked = int(R * rho) if rho > 0 else 0
    idx = None
    q_sel = None
    if rho > 0:
        nr = block.attn_norm(xr)
        vr = block.v(nr)
        old = store.v_r[:, :, :R]
        sim = F.cosine_similarity(vr.transpose(1, 2).reshape(B, R, -1).float(),
                                  old.transpose(1, 2).reshape(B, R, -1).float(), dim=-1)
        store.v_r[:, :, :R] = vr
        st.flops += block.flops(0, B * R, 0, 0, 0)
        if picked > 0:
            low, idx = sim.topk(picked, dim=1, largest=False)
            st.threshold = low.max()  # no host sync here: summary() reads them all at once
            n_sel = gather_rows(nr, idx)
            cos_sel, sin_sel = cos[P + idx].unsqueeze(1), sin[P + idx].unsqueeze(1)  # [B, 1, k, D]
            q_sel = block.q(n_sel, cos_sel, sin_sel)
            k_sel = block.k(n_sel, cos_sel, sin_sel)
            k_r = store.k_r[:, :, :R].transpose(1, 2)  # [B, R, H, D] view
            scatter_rows(k_r, idx, k_sel.transpose(1, 2))
    return picked, idx, q_sel


def _with_response(x: torch.Tensor, out_p: torch.Tensor, store: LayerStore, P: int, picked: int,
                   st: LayerStats) -> tuple[torch.Tensor, LayerStats]:
    """The layer's output once the response stores are verified: the response rows add the
    cached (partly recomputed) attention and FFN outputs to their current hidden states."""
    B, T, _ = x.shape
    R = T - P
    st.response_recomputed, st.response_reused = B * picked, B * (R - picked)
    return torch.cat([out_p, x[:, P:] + store.attn_r[:, :R] + store.ffn_r[:, :R]], dim=1), st


def refresh_prompt(block: Block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, store: LayerStore,
                   P: int, rho: float) -> tuple[torch.Tensor, LayerStats]:
    """Prompt only: the response is V-verified (``verify_response``), then the prompt rows are
    recomputed against the verified response K/V, in one attention call and one FFN call
    together with the picked response rows."""
    B, T, _ = x.shape
    R = T - P
    xp, xr = x[:, :P], x[:, P:]
    st = LayerStats()
    picked, idx, q_sel = verify_response(block, xr, cos, sin, store, P, rho, st)
    n = block.attn_norm(xp)
    kp, vp = block.k(n, cos[:P], sin[:P]), block.v(n)
    keys = torch.cat([kp, store.k_r[:, :, :R]], dim=2)
    values = torch.cat([vp, store.v_r[:, :, :R]], dim=2)
    qp = block.q(n, cos[:P], sin[:P])
    a = block.attend(qp if q_sel is None else torch.cat([qp, q_sel], dim=2), keys, values)
    ap = a[:, :P]
    hp = xp + ap
    h_all = hp if idx is None else torch.cat([hp, gather_rows(xr, idx) + a[:, P:]], dim=1)
    f = block.ffn(h_all)
    fp = f[:, :P]
    if idx is not None:
        scatter_rows(store.attn_r[:, :R], idx, a[:, P:])
        scatter_rows(store.ffn_r[:, :R], idx, f[:, P:])
    store.k_p, store.v_p, store.attn_p, store.ffn_p = kp, vp, ap, fp
    out_p = hp + fp
    st.prompt_recomputed = B * P
    st.flops += block.flops(B * P + B * picked, 0, B * P + B * picked, T, B * P + B * picked)
    return _with_response(x, out_p, store, P, picked, st)


def reuse(block: Block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, store: LayerStore,
          P: int, rho: float) -> tuple[torch.Tensor, LayerStats]:
    """Neither refreshes: the prompt rows take their cached features, the response is
    V-verified (``verify_response``) and only the picked rows get attention (against the
    full cached K/V) and the FFN recomputed. ``rho = 0`` is pure reuse."""
    B, T, _ = x.shape
    R = T - P
    xp, xr = x[:, :P], x[:, P:]
    st = LayerStats()
    picked, idx, q_sel = verify_response(block, xr, cos, sin, store, P, rho, st)
    out_p = xp + store.attn_p + store.ffn_p
    st.prompt_reused = B * P
    if idx is not None:
        keys = torch.cat([store.k_p, store.k_r[:, :, :R]], dim=2)
        values = torch.cat([store.v_p, store.v_r[:, :, :R]], dim=2)
        a_sel = block.attend(q_sel, keys, values)
        f_sel = block.ffn(gather_rows(xr, idx) + a_sel)
        scatter_rows(store.attn_r[:, :R], idx, a_sel)
        scatter_rows(store.ffn_r[:, :R], idx, f_sel)
        st.flops += block.flops(B * picked, 0, B * picked, T, B * picked)
    return _with_response(x, out_p, store, P, picked, st)


def run_block(cache: FeatureCache, layer: int, block: Block, x: torch.Tensor, cos: torch.Tensor,
              sin: torch.Tensor) -> torch.Tensor:
    """Layer ``layer``'s cached forward: the case from ``cache.plan(layer)``, on the layer's
    store; its LayerStats are appended to ``cache.last_stats``. Returns the block's output."""
    refresh_p, refresh_r = cache.plan(layer)
    store, P, rho = cache.layers[layer], cache.prompt_len, cache.settings.rho
    if refresh_p and refresh_r:
        out, stats = refresh_all(block, x, cos, sin, store, P, cache.gen_length)
    elif refresh_r:
        out, stats = refresh_response(block, x, cos, sin, store, P)
    elif refresh_p:
        out, stats = refresh_prompt(block, x, cos, sin, store, P, rho)
    else:
        out, stats = reuse(block, x, cos, sin, store, P, rho)
    cache.last_stats.append(stats)
    return out
