"""Fast-dLLM's confidence-threshold parallel decoding, in semi-autoregressive blocks.

Each forward unmasks every masked position of the current block whose confidence reaches
``threshold`` (always at least the most confident one). With ``factor`` set, the factor
rule replaces the fixed threshold: with masked confidences sorted c(1) >= c(2) >= ...,
unmask the largest n with c(n) >= 1 - factor / (n + 1).
"""
from __future__ import annotations

import numpy as np

from ..params import Param, dataclass_of_params
from .base import Decision, Layout, Observation, Policy, Stage, Thresholds, top_positions


def factor_count(sorted_conf: np.ndarray, factor: float) -> int:
    """Largest n with c(n) >= 1 - factor / (n + 1), at least 1 (``sorted_conf`` descending)."""
    n = np.arange(1, sorted_conf.size + 1)
    ok = np.flatnonzero(sorted_conf >= 1.0 - factor / (n + 1))
    return int(ok[-1] + 1) if ok.size else 1


@dataclass_of_params
class ThresholdPolicy(Policy):
    name = "threshold"
    TITLE = "Threshold (Fast-dLLM)"
    STAGES = (Stage.THRESHOLD,)
    PARAMS = (
        Param("threshold", "threshold", 0.9, 0, 1, "Fast-dLLM: unmask every masked position of the block at or "
              "above it, at least one", minimum=0, maximum=1, step=0.01, label="Confidence threshold",
              aliases=("confidence_threshold",)),
        Param("factor", "threshold", None, 0, 4, "Fast-dLLM's factor rule: the largest n with c(n) >= 1 - "
              "factor/(n+1)", unset="the fixed threshold", kind=float, off=0.0, minimum=0, open_min=True,
              step=0.1, label="Factor (0 = off)"),
    )

    def thresholds(self) -> Thresholds:
        return Thresholds(threshold=self.threshold, factor=self.factor)

    def reset(self, layout: Layout, rng: np.random.Generator) -> None:
        self.layout = layout

    def decide(self, obs: Observation) -> Decision:
        block = int(np.flatnonzero(obs.mask)[0]) // self.layout.block_length
        start, end = self.layout.block_bounds(block)
        candidates = np.zeros_like(obs.mask)
        candidates[start:end] = obs.mask[start:end]
        conf = obs.confidence
        if self.factor is None:
            decode = np.flatnonzero(candidates & (conf >= self.threshold))
            if decode.size == 0:
                decode = top_positions(conf, candidates, 1)
        else:
            idx = np.flatnonzero(candidates)
            n = factor_count(np.sort(conf[idx])[::-1], self.factor)
            decode = top_positions(conf, candidates, n)
        return Decision(decode=decode, stage=Stage.THRESHOLD, block=block, span=(start, end))
