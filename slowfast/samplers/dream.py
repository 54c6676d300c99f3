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

import numpy as np
import torch

from ..params import Param, dataclass_of_params
from .base import Decision, Layout, Observation, Policy, Scoring, Stage, top_positions

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


@dataclass_of_params
class DreamPolicy(Policy):
    name = "dream"
    TITLE = "Dream's decoding"
    STAGES = (Stage.BASELINE,)
    USES_STEPS = True
    PARAMS = (
        # entropy: Dream's README and the SlowFast Dream runs (its generation_config says origin)
        Param("alg", "dream", "entropy", meaning="how a position's confidence is scored: negative entropy, top-1 "
              "probability, top1 - top2 margin, or random (origin)",
              choices=("entropy", "maskgit_plus", "topk_margin", "origin"), label="Confidence (alg)"),
        Param("alg_temp", "dream", None, 0, 2, "> 0: sample positions by softmax(score / alg_temp)",
              unset="the most confident positions", kind=float, off=0.0, minimum=0, step=0.05,
              label="Position temperature (alg_temp)"),
        Param("eps", "dream", 1e-3, 0.0001, 0.1, "the timestep schedule runs from 1 to eps over `steps` forwards",
              minimum=0, maximum=1, open_min=True, open_max=True, step=0.0001, label="Schedule end (eps)"),
        Param("top_p", "dream", None, 0.01, 1, "nucleus filtering of tokens", unset="off", kind=float, off=1.0,
              minimum=0, maximum=1, open_min=True, step=0.01, label="top_p (1 = off)"),
        Param("top_k", "dream", None, 0, 200, "top-k filtering of tokens", unset="off", kind=int, off=0, minimum=1,
              step=1, label="top_k (0 = off)"),
    )

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
