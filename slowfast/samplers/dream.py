"""Dream's own decoding (``diffusion_generate`` of Dream-v0), as a policy.

Dream has no blocks: the whole generation is one canvas decoded in ``steps`` forwards on a
timestep schedule ``t_i = linspace(1, eps, steps + 1)``. At step i with m masked positions,
``int(m * (1 - t_{i+1} / t_i))`` of them are unmasked (all that remain on the last step),
chosen by a per-position score (``alg``):

* ``maskgit_plus``: the probability of the drawn token;
* ``topk_margin``: top-1 minus top-2 probability;
* ``entropy``: the negative entropy of the position's distribution;
* ``origin``: no score; each masked position is unmasked with probability 1 - t_{i+1} / t_i.

With ``alg_temp`` > 0 the positions are sampled (without replacement) with probabilities
softmax(score / alg_temp) instead of taken top-k. Tokens are drawn as Dream draws them:
logits / temperature (greedy at 0), top-p, top-k (the run's ``temperature``; ``top_p`` and
``top_k`` here). The policy asks the engine for that rule and the score with ``scoring()``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .base import Decision, Layout, Observation, Policy, Scoring, Stage, top_positions

ALGS = ("maskgit_plus", "topk_margin", "entropy", "origin")
SCORE_OF = {"maskgit_plus": "probability", "topk_margin": "margin", "entropy": "neg_entropy",
            "origin": "probability"}


def transfer_count(masked: int, t: float, s: float, last: bool) -> int:
    """Positions to unmask at a step from time t to s, in Dream's float32 arithmetic."""
    if last:
        return masked
    return int(torch.tensor(float(masked), dtype=torch.float32) * (1 - torch.tensor(s) / torch.tensor(t)))


def sample_without_replacement(scores: np.ndarray, temperature: float, k: int,
                               rng: np.random.Generator) -> np.ndarray:
    """k indices drawn one after another with probabilities softmax(scores / temperature)
    among those not yet drawn (Gumbel top-k: exact, and never short of candidates)."""
    keys = scores.astype(np.float64) / temperature + rng.gumbel(size=scores.size)
    return np.argsort(-keys, kind="stable")[:k]


@dataclass
class DreamPolicy(Policy):
    alg: str = "entropy"  # Dream's README and the SlowFast Dream runs; its generation_config says origin
    alg_temp: Optional[float] = None  # None or 0: top-k by score; > 0: sample positions
    eps: float = 1e-3
    top_p: Optional[float] = None
    top_k: Optional[int] = None

    name = "dream"

    def validate(self) -> None:
        if self.alg not in ALGS:
            raise ValueError(f"alg: {self.alg!r} is not allowed; allowed: {', '.join(ALGS)}")
        if self.alg_temp is not None and (isinstance(self.alg_temp, bool) or not isinstance(self.alg_temp, (int, float))
                                          or not np.isfinite(self.alg_temp) or self.alg_temp < 0):
            raise ValueError(f"alg_temp: {self.alg_temp!r} is not allowed; it must be a number >= 0 (or unset)")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 < self.eps < 1:
            raise ValueError(f"eps: {self.eps!r} is not allowed; it must be a number in (0, 1)")
        if self.top_p is not None:
            if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
                raise ValueError(f"top_p: {self.top_p!r} is not allowed; it must be a number in (0, 1] (or unset)")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer))
                                       or self.top_k < 1):
            raise ValueError(f"top_k: {self.top_k!r} is not allowed; it must be an integer >= 1 (or unset)")

    def check_layout(self, layout: Layout) -> None:
        if layout.block_length != layout.gen_length:
            raise ValueError(
                f"block_length: {layout.block_length} is not allowed for the dream sampler; Dream's decoding has "
                f"no blocks: set block_length = gen_length ({layout.gen_length})"
            )
        if not 1 <= layout.steps <= layout.gen_length:
            raise ValueError(
                f"steps: {layout.steps} is not allowed for the dream sampler; allowed: 1..{layout.gen_length} "
                "(gen_length: more steps than positions would only add forwards that decode nothing)"
            )

    def done(self, mask: np.ndarray) -> bool:
        """Dream runs all ``steps`` forwards (its last step empties the canvas)."""
        return self.step >= self.steps

    def scoring(self) -> Scoring:
        return Scoring(score=SCORE_OF[self.alg], top_p=self.top_p, top_k=self.top_k)

    def reset(self, layout: Layout, rng: np.random.Generator) -> None:
        self.layout = layout
        self.rng = rng
        self.steps = layout.steps
        self.times = torch.linspace(1, self.eps, self.steps + 1).tolist()  # float32, as Dream's
        self.step = 0

    def decide(self, obs: Observation) -> Decision:
        i = min(self.step, self.steps - 1)  # the schedule's last step empties the canvas
        t, s = self.times[i], self.times[i + 1]
        last = i == self.steps - 1
        masked = obs.mask
        idx = np.flatnonzero(masked)
        info: dict = {"t": round(float(t), 6)}
        if self.alg == "origin":
            p = 1.0 if last else float(1 - torch.tensor(s) / torch.tensor(t))
            decode = idx[self.rng.random(idx.size) < p]
        else:
            k = transfer_count(idx.size, t, s, last)
            score = obs.confidence if obs.score is None else obs.score
            if k <= 0:
                decode = idx[:0]
            elif not self.alg_temp:
                decode = top_positions(score, masked, k)
            else:
                decode = np.sort(idx[sample_without_replacement(score[idx], float(self.alg_temp), k, self.rng)])
            info["k"] = int(k)
        self.step += 1
        return Decision(decode=np.asarray(decode, dtype=np.int64), stage=Stage.BASELINE, block=0,
                        span=(0, self.layout.gen_length), info=info)
