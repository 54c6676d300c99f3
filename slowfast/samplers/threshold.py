"""Fast-dLLM's confidence-threshold parallel decoding, in semi-autoregressive blocks.

Each forward unmasks every masked position of the current block whose confidence reaches
``threshold`` (always at least the most confident one). With ``factor`` set, the factor
rule replaces the fixed threshold: with masked confidences sorted c(1) >= c(2) >= ...,
unmask the largest n with c(n) >= 1 - factor / (n + 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .base import Decision, Layout, Observation, Policy, Stage, Thresholds, check_unit_interval, top_positions


def factor_count(sorted_conf: np.ndarray, factor: float) -> int:
    """Largest n with c(n) >= 1 - factor / (n + 1), at least 1 (``sorted_conf`` descending)."""
    n = np.arange(1, sorted_conf.size + 1)
    ok = np.flatnonzero(sorted_conf >= 1.0 - factor / (n + 1))
    return int(ok[-1] + 1) if ok.size else 1


@dataclass
class ThresholdPolicy(Policy):
    threshold: float = 0.9
    factor: Optional[float] = None

    name = "threshold"
    ALIASES = {"confidence_threshold": "threshold"}

    def thresholds(self) -> Thresholds:
        return Thresholds(threshold=self.threshold, factor=self.factor)

    def validate(self) -> None:
        check_unit_interval("threshold", self.threshold)
        if self.factor is not None and (isinstance(self.factor, bool) or not isinstance(self.factor, (int, float))
                                        or not np.isfinite(self.factor) or self.factor <= 0):
            raise ValueError(f"factor: {self.factor!r} is not allowed; it must be a number > 0 (or unset)")

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
