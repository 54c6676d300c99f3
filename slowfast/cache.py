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

The cache lives inside the network's layers (``Block.forward_cached``); the engine only
calls ``begin_forward`` and reads ``last_stats``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Optional

import torch


@dataclass
class CacheSettings:
    """Refresh intervals and the V-verify ratio (reference names accepted as aliases)."""

    kp: int = 100  # prompt refresh every kp forwards (prompt_interval_steps)
    kr: int = 5  # response refresh every kr forwards (gen_interval_steps)
    rho: float = 0.25  # V-verify: share of response rows recomputed (transfer_ratio)
    refresh_first_layer: bool = True  # layer 0 always fully refreshed (reference fix)

    ALIASES: ClassVar[dict[str, str]] = {
        "prompt_interval_steps": "kp",
        "gen_interval_steps": "kr",
        "transfer_ratio": "rho",
        "K_p": "kp",
        "K_r": "kr",
    }

    def __post_init__(self) -> None:
        for name in ("kp", "kr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {value!r} is not allowed; it must be an integer >= 1")
        if isinstance(self.rho, bool) or not isinstance(self.rho, (int, float)) or not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"rho: {self.rho!r} is outside the allowed range [0, 1]")
        if not isinstance(self.refresh_first_layer, bool):
            raise ValueError(f"refresh_first_layer: {self.refresh_first_layer!r} is not allowed; use true or false")

    @classmethod
    def from_params(cls, params: Optional[dict[str, Any]] = None) -> "CacheSettings":
        allowed = [f.name for f in fields(cls)]
        resolved: dict[str, Any] = {}
        for key, value in (params or {}).items():
            name = cls.ALIASES.get(key, key)
            if name not in allowed:
                raise ValueError(
                    f"{key}: unknown cache parameter; allowed: {', '.join(sorted(allowed + list(cls.ALIASES)))}"
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
    similarity_threshold: Optional[float] = None  # highest cosine similarity among recomputed rows
    flops: float = 0.0


@dataclass
class FeatureCache:
    """The cache of one generation: settings, forward counter, per-layer stores and stats."""

    settings: CacheSettings
    prompt_len: int
    gen_length: int
    n_layers: int
    forward: int = 0
    forced: Optional[tuple[bool, bool]] = None  # benchmarks: one refresh case in every forward
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
        return self.forced or self.settings.refresh(self.forward)

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
        return {
            "prompt_recomputed": [x.prompt_recomputed for x in s],
            "prompt_reused": [x.prompt_reused for x in s],
            "response_recomputed": [x.response_recomputed for x in s],
            "response_reused": [x.response_reused for x in s],
            "similarity_threshold": [x.similarity_threshold for x in s],
        }
