"""Decoding policies, one file each, behind the small interface of ``base.Policy``."""
from __future__ import annotations

from typing import Any, Optional

from .base import Decision, DecodingStalled, Layout, Observation, Policy, Scoring, Stage, Thresholds
from .baseline import BaselinePolicy
from .dream import DreamPolicy
from .slowfast import SlowFastPolicy
from .threshold import ThresholdPolicy

SAMPLERS: dict[str, type[Policy]] = {
    "baseline": BaselinePolicy,
    "slowfast": SlowFastPolicy,
    "threshold": ThresholdPolicy,
    "dream": DreamPolicy,
}
STEPS_SAMPLERS = ("baseline", "dream")  # the samplers ``steps`` sets; the others stop when the canvas is full


def make_policy(name: str, params: Optional[dict[str, Any]] = None) -> Policy:
    """A validated policy from its name and parameters (our names or reference aliases)."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler: {name!r} is not allowed; allowed: {', '.join(SAMPLERS)}")
    return SAMPLERS[name].from_params(params)


def thresholds_of(settings: dict[str, Any]) -> Thresholds:
    """The thresholds of a trace's sampler (``trace.settings``); none for settings that no
    longer make a policy (e.g. a hand-edited trace)."""
    try:
        return make_policy(str(settings.get("sampler")), dict(settings.get("params") or {})).thresholds()
    except (ValueError, TypeError):
        return Thresholds()


__all__ = ["SAMPLERS", "STEPS_SAMPLERS", "Decision", "DecodingStalled", "Layout", "Observation", "Policy", "Scoring", "Stage", "Thresholds",
           "make_policy", "thresholds_of"]
