"""LLaDA's sampler: low-confidence (or random) remasking in semi-autoregressive blocks.

Each block gets ``steps // num_blocks`` forwards; a block with m masks and s steps unmasks
m // s tokens per step plus one more on the first m % s steps (the linear schedule).
"""
from __future__ import annotations

import numpy as np

from ..params import Param, dataclass_of_params
from .base import Decision, Layout, Observation, Policy, Stage, Thresholds, top_positions


def transfer_schedule(masks: int, steps: int) -> list[int]:
    """Tokens to unmask at each of ``steps`` steps for a block with ``masks`` masks."""
    base, extra = divmod(masks, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


@dataclass_of_params
class BaselinePolicy(Policy):
    name = "baseline"
    TITLE = "Baseline"
    STAGES = (Stage.BASELINE,)
    USES_STEPS = True
    PARAMS = (
        Param("remasking", "baseline", "low_confidence", meaning="which positions each step unmasks",
              choices=("low_confidence", "random"), label="Remasking"),
    )

    def thresholds(self) -> Thresholds:
        return Thresholds(remasking=self.remasking)

    def check_layout(self, layout: Layout) -> None:
        nb = layout.num_blocks
        if layout.steps < nb or layout.steps % nb:
            raise ValueError(
                f"steps: {layout.steps} is not allowed; the baseline needs a positive multiple of the "
                f"number of blocks ({nb} = gen_length {layout.gen_length} / block_length {layout.block_length})"
            )
        if layout.steps // nb > layout.block_length:
            raise ValueError(
                f"steps: {layout.steps} gives {layout.steps // nb} steps per block, more than block_length "
                f"{layout.block_length}; some steps would unmask nothing. Allowed: at most "
                f"{layout.block_length * nb}"
            )

    def reset(self, layout: Layout, rng: np.random.Generator) -> None:
        self.layout = layout
        self.rng = rng
        self.steps_per_block = layout.steps // layout.num_blocks
        self.block = 0
        self.step_in_block = 0
        self.schedule: list[int] = []

    def decide(self, obs: Observation) -> Decision:
        start, end = self.layout.block_bounds(self.block)
        in_block = np.zeros_like(obs.mask)
        in_block[start:end] = True
        candidates = obs.mask & in_block
        if self.step_in_block == 0:
            self.schedule = transfer_schedule(int(candidates.sum()), self.steps_per_block)
        k = self.schedule[self.step_in_block]
        if self.remasking == "random":
            scores = self.rng.random(obs.mask.shape[0])
        else:
            scores = obs.confidence
        decode = top_positions(scores, candidates, k)
        decision = Decision(decode=decode, stage=Stage.BASELINE, block=self.block, info={"k": k})
        self.step_in_block += 1
        if self.step_in_block == self.steps_per_block:
            self.block += 1
            self.step_in_block = 0
        return decision
