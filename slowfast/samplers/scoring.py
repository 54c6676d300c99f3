"""The logits side of a policy's ``Scoring`` request, run by the engine.

Policies never see logits; a policy that needs Dream's sampling rule or a second statistic
per position (``DreamPolicy``) names it with a ``base.Scoring`` and the engine calls
``score_logits`` on each forward's logits. Written from the behaviour of Dream's
``generation_utils.sample_tokens`` (temperature, top-p, top-k, then the top-1 probability,
the top1 - top2 margin or the negative entropy), in float32.
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import Scoring

ENTROPY_EPS = 1e-10  # Dream adds it inside the log: sum(p * log(p + 1e-10))


def nucleus_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Drop the tail of the sorted distribution once its cumulative probability exceeds
    ``top_p``; the token that crosses it, and always the most likely one, are kept."""
    ordered, order = logits.sort(dim=-1, descending=True)
    cumulative = ordered.softmax(-1).cumsum(-1)
    drop = torch.zeros_like(cumulative, dtype=torch.bool)
    drop[..., 1:] = cumulative[..., :-1] > top_p  # shifted: the crossing token stays
    remove = torch.zeros_like(drop).scatter(-1, order, drop)
    return logits.masked_fill(remove, torch.finfo(logits.dtype).min)


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the logits at or above the k-th largest of each row."""
    k = min(int(top_k), logits.shape[-1])
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def score_logits(logits: torch.Tensor, temperature: float, generator: Optional[torch.Generator],
                 scoring: Scoring) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(confidence, token, score) per row of ``logits`` ([rows, vocab]) under ``scoring``
    (with ``scoring.greedy`` the temperature is not used: the most likely token, no draw)."""
    if scoring.greedy:
        temperature = 0.0
    x = logits.float()
    if temperature > 0:
        x = x / temperature
    if scoring.top_p is not None and scoring.top_p < 1:
        x = nucleus_filter(x, scoring.top_p)
    if scoring.top_k is not None:
        x = top_k_filter(x, scoring.top_k)
    probs = x.softmax(-1)
    if temperature > 0:
        token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        confidence = probs.gather(-1, token.unsqueeze(-1)).squeeze(-1)
    else:
        confidence, token = probs.max(-1)
    if scoring.score == "margin":
        top2 = probs.topk(min(2, probs.shape[-1]), dim=-1).values
        score = top2[..., 0] - (top2[..., 1] if top2.shape[-1] > 1 else 0.0)
    elif scoring.score == "neg_entropy":
        score = (probs * torch.log(probs + ENTROPY_EPS)).sum(-1)
    else:
        score = confidence
    return confidence, token, score
