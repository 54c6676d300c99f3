"""Decoding policies, one file each, behind the small interface of ``base.Policy``, and the
registry that makes them samplers: a registered policy's name is a ``sampler``, and its
parameters (``PARAMS``) join the table (``slowfast.params``) that the app's controls,
``session.Controls``, the CLI's flags, the checks and the README's table are made from."""
from __future__ import annotations

from typing import Any, Callable, Optional

from ..params import CACHE, GENERATION, LIMITS, Param, shown
from .base import Decision, DecodingStalled, Layout, Observation, Policy, Scoring, Stage, Thresholds
from .baseline import BaselinePolicy
from .dream import DreamPolicy
from .llada2 import LLaDA2Policy
from .entropy_bound import EntropyBoundPolicy
from .slowfast import SlowFastPolicy
from .threshold import ThresholdPolicy

SAMPLERS: dict[str, type[Policy]] = {}
DEFAULT_SAMPLER = "slowfast"
_LISTENERS: list[Callable[[], None]] = []


def register(policy: type[Policy]) -> type[Policy]:
    """Make ``policy`` the sampler ``policy.name``: the engine, the trace check, ``Controls``
    and the CLI take it (and its parameters) from now on; so do the app and the README's
    table when they are built."""
    if policy.name in SAMPLERS:
        raise ValueError(f"sampler: {policy.name!r} is registered already")
    taken = {p.name: p.group for p in (*GENERATION, *LIMITS, *CACHE)}
    taken.update({p.name: other.name for other in SAMPLERS.values() for p in other.PARAMS})
    for p in policy.PARAMS:
        if p.name in taken:
            raise ValueError(f"{policy.name}: parameter {p.name!r} is {taken[p.name]}'s already; name it apart")
    SAMPLERS[policy.name] = policy
    for listener in _LISTENERS:
        listener()
    return policy


def unregister(name: str) -> None:
    """Remove the sampler ``name`` (a test's own sampler, when it is done)."""
    SAMPLERS.pop(name)
    for listener in _LISTENERS:
        listener()


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever a sampler is registered or removed (``session.Controls`` remakes its fields)."""
    _LISTENERS.append(listener)


def sampler_params(name: str) -> tuple[Param, ...]:
    """The parameters of the sampler ``name`` (none for a name that is not a sampler)."""
    policy = SAMPLERS.get(name) if isinstance(name, str) else None
    return policy.PARAMS if policy is not None else ()


def stage_names() -> tuple[str, ...]:
    """Every stage a registered sampler's decisions may name."""
    return tuple(dict.fromkeys(stage for policy in SAMPLERS.values() for stage in policy.STAGES))


def make_policy(name: str, params: Optional[dict[str, Any]] = None) -> Policy:
    """A validated policy from its name and parameters (our names or reference aliases)."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"sampler: {shown(name)} is not allowed; allowed: {', '.join(SAMPLERS)}")
    return SAMPLERS[name].from_params(params)


def thresholds_of(settings: dict[str, Any]) -> Thresholds:
    """The thresholds of a trace's sampler (``trace.settings``); none for settings that no
    longer make a policy (e.g. a hand-edited trace)."""
    try:
        return make_policy(str(settings.get("sampler")), dict(settings.get("params") or {})).thresholds()
    except (ValueError, TypeError):
        return Thresholds()


# The registry: a new sampler is one file in this folder and its entry here.
for _policy in (BaselinePolicy, SlowFastPolicy, ThresholdPolicy, DreamPolicy, EntropyBoundPolicy, LLaDA2Policy):
    register(_policy)
STEPS_SAMPLERS = tuple(name for name, policy in SAMPLERS.items() if policy.USES_STEPS)  # the others stop when full

__all__ = ["DEFAULT_SAMPLER", "SAMPLERS", "STEPS_SAMPLERS", "Decision", "DecodingStalled", "Layout", "Observation",
           "Policy", "Scoring", "Stage", "Thresholds", "make_policy", "on_change", "register", "sampler_params",
           "stage_names", "thresholds_of", "unregister"]
