"""The policy contract: canvas state in, a decision out. Policies never call the model.

Positions are indices into the generated part of the canvas (0 = first generated token).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Optional

import numpy as np

from ..params import Param, fill_defaults, shown, shown_name


@dataclass(frozen=True)
class Layout:
    """The canvas geometry a run is decoded in: semi-autoregressive blocks of the generation."""

    gen_length: int
    block_length: int
    steps: int

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    def block_bounds(self, block: int) -> tuple[int, int]:
        start = block * self.block_length
        return start, start + self.block_length


SCORES = ("probability", "margin", "neg_entropy")


class Stage:
    """The stage a Decision (and its StepRecord) is in: the names traces and views share."""

    SLOW = "slow"  # SlowFast: exploring, the span not yet settled
    FAST = "fast"  # SlowFast: decoding the settled span
    BASELINE = "baseline"  # LLaDA's (and Dream's) fixed number of tokens per forward
    THRESHOLD = "threshold"  # Fast-dLLM's rule: every position above a threshold
    ALL = (SLOW, FAST, BASELINE, THRESHOLD)


@dataclass(frozen=True)
class Thresholds:
    """The numbers a policy decides by, for views to draw against (None: no such rule).
    Views ask ``Policy.thresholds()`` instead of reading parameter names."""

    high_confidence: Optional[float] = None  # SlowFast: decode in parallel above this
    slow_confidence: Optional[float] = None  # SlowFast: the slow stage's decode threshold
    horizon: Optional[float] = None  # SlowFast: the span ends at the last position above this
    spread: Optional[float] = None  # SlowFast: the span is stable when the horizons' spread is below
    spread_measure: str = "standard deviation"  # what ``spread`` bounds
    spread_inclusive: bool = False  # stable at spread <= ``spread`` (Dream's code) instead of <
    stability_window: Optional[int] = None  # SlowFast: horizon estimates the spread is taken over
    exploration_steps: Optional[int] = None  # SlowFast: forwards per slow stage
    threshold: Optional[float] = None  # threshold sampler: decode above this
    factor: Optional[float] = None  # threshold sampler: Fast-dLLM's factor rule instead
    remasking: Optional[str] = None  # baseline: which positions it keeps (low_confidence / random)
    entropy_bound: Optional[float] = None  # entropy_bound (DiffusionGemma): accept while the entropy sum - max <= this
    stop_entropy: Optional[float] = None  # entropy_bound: a canvas stops when its mean entropy is below this ...
    stop_stability: Optional[int] = None  # ... and its argmax equals that of this many previous steps

    @property
    def spread_label(self) -> str:
        """``spread_measure`` short enough for a legend."""
        return "std" if self.spread_measure == "standard deviation" else self.spread_measure

    def stable(self, spread: Optional[float]) -> bool:
        """Whether a window with this spread passes the stability test."""
        if self.spread is None or spread is None:
            return False
        return spread <= self.spread if self.spread_inclusive else spread < self.spread

    def lines(self) -> list[tuple[float, str]]:
        """The confidence levels worth a line on a plot, ascending, equal ones merged."""
        out = sorted([(v, label) for v, label in ((self.horizon, "horizon"), (self.high_confidence, "high"))
                      if v is not None]
                     + ([(self.threshold, "threshold")] if self.threshold is not None and self.factor is None
                        else []))
        merged: list[tuple[float, str]] = []
        for value, label in out:
            if merged and abs(merged[-1][0] - value) < 1e-9:
                merged[-1] = (value, merged[-1][1] + "/" + label)
            else:
                merged.append((float(value), label))
        return merged


@dataclass(frozen=True)
class Scoring:
    """How the engine should turn logits into an Observation, for a policy that needs more
    than LLaDA's rule (argmax, or a Gumbel sample at temperature > 0, and its probability).

    The token is drawn as Dream's ``generate`` draws it: logits / temperature, then top-p
    and top-k filtering, softmax; greedy at temperature 0, else one categorical sample.
    With ``greedy`` the token is the most likely one at any temperature (the run's
    temperature is not used), as the published SlowFast Dream code takes it.
    ``confidence`` is that token's probability under the filtered distribution, and
    ``score`` is the per-position statistic named here: the same probability, the margin
    top1 - top2 of the filtered probabilities, or their negative entropy sum(p log p).
    The policy still never sees logits: the engine computes these and fills
    ``Observation.score``.
    """

    score: str = "probability"  # one of SCORES
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    greedy: bool = False  # the most likely token whatever the run's temperature


@dataclass
class Observation:
    """What the engine saw after one forward, as much as a policy needs to decide.

    ``confidence`` covers every generated position; positions a truncated forward did not
    feed carry the values of the last forward that saw them. ``score`` is None unless the
    policy asked for a ``Scoring``. (The tokens themselves stay with the engine: a policy
    chooses positions, the engine writes their predicted tokens.)
    """

    mask: np.ndarray  # bool, True = still masked
    confidence: np.ndarray  # float, softmax probability of the predicted token
    score: Optional[np.ndarray] = None  # float, the statistic Policy.scoring() asked for
    changed: Optional[np.ndarray] = None  # bool, decoded positions predicted otherwise now (Policy.EDITS only)


@dataclass
class Decision:
    """Which positions to unmask now, and how the policy sees the canvas."""

    decode: np.ndarray  # positions to unmask with their argmax tokens
    stage: str
    block: int
    span: Optional[tuple[int, int]] = None  # [start, end) of the current span
    horizons: Optional[list[int]] = None  # horizon estimates (span ends) in the window
    horizon_spread: Optional[float] = None  # their spread (std, or variance for the paper variant)
    next_extent: Optional[int] = None  # generated positions the next forward needs; None = all
    info: dict = field(default_factory=dict)
    edit: Optional[np.ndarray] = None  # decoded positions that take their new prediction (Policy.EDITS only)


def top_positions(scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` candidate positions with the highest scores (ties: lower position first)."""
    idx = np.flatnonzero(candidates)
    if k <= 0 or idx.size == 0:
        return idx[:0]
    order = np.argsort(-scores[idx], kind="stable")
    return np.sort(idx[order[:k]])


class Policy(ABC):
    """One decoding policy. A subclass declares its parameters (``PARAMS``, each a
    ``params.Param``: default, allowed values, the app's slider, the CLI's help, ...) and is made
    a dataclass of them with ``params.dataclass_of_params``; the registry
    (``slowfast.samplers.register``) puts them in the app, the CLI and the docs.

    ``ALIASES`` maps reference-code (and paper) parameter names to ours, so a user who read the
    paper or the reference implementation finds the same knob; it is made from ``PARAMS``.
    """

    name: ClassVar[str]
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    ALIASES: ClassVar[dict[str, str]] = {}
    STAGES: ClassVar[tuple[str, ...]] = ()  # the stages its decisions name (a trace's records may name them)
    TITLE: ClassVar[str] = ""  # the app's heading over its parameters
    USES_STEPS: ClassVar[bool] = False  # whether the run's ``steps`` sets its number of forwards
    EDITS: ClassVar[bool] = False  # whether it may re-decode decoded positions (Observation.changed, Decision.edit)

    @classmethod
    def parameter_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_params(cls, params: Optional[dict[str, Any]] = None) -> "Policy":
        """Build from user parameters (our names or the reference aliases), validated."""
        if params is not None and not isinstance(params, dict):
            raise ValueError(f"params: {shown(params)} is not allowed; it must be an object of sampler parameters "
                             "(name: value)")
        resolved: dict[str, Any] = {}
        allowed = cls.parameter_names()
        for key, value in (params or {}).items():
            name = cls.ALIASES.get(key, key)
            if name not in allowed:
                names = sorted(allowed + list(cls.ALIASES))
                raise ValueError(
                    f"{shown_name(key)}: unknown parameter for sampler '{cls.name}'; allowed: {', '.join(names)}"
                )
            if name in resolved:
                raise ValueError(f"{key}: parameter '{name}' given twice (directly and by an alias)")
            resolved[name] = value
        policy = cls(**resolved)  # type: ignore[call-arg]
        policy.validate()
        return policy

    def __post_init__(self) -> None:
        fill_defaults(self)  # a parameter not given takes the table's default

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.parameter_names()}

    def validate(self) -> None:
        """Check the parameters alone (each against its ``Param``); raise ValueError naming the bad one."""
        for p in type(self).PARAMS:
            p.check(getattr(self, p.name))

    def check_layout(self, layout: Layout) -> None:
        """Check the parameters against the canvas geometry."""

    def thresholds(self) -> Thresholds:
        """The numbers this policy decides by, for the views (see ``Thresholds``)."""
        return Thresholds()

    def scoring(self) -> Optional[Scoring]:
        """None: the engine's LLaDA rule (confidence = probability of the argmax or of the
        Gumbel-sampled token). A policy that needs Dream's sampling rule, a second
        statistic per position (margin, entropy) or the most likely token at any
        temperature (``greedy``) returns a Scoring."""
        return None

    @abstractmethod
    def reset(self, layout: Layout, rng: np.random.Generator) -> None:
        """Start a new generation."""

    @abstractmethod
    def decide(self, obs: Observation) -> Decision:
        """Choose what to unmask after one forward."""

    def done(self, mask: np.ndarray) -> bool:
        """Whether the run is over. Most policies stop when no position is masked; the
        published SlowFast code still runs the rest of a slow stage on a full block."""
        return not mask.any()

    def current_block(self) -> Optional[int]:
        """The block the next forward works on, as decided so far (None: the policy moves on
        as soon as a block is full). A policy that may spend forwards on a full block says
        which, so the engine's forward cap (``max_forwards_per_block``) counts them."""
        return None


class DecodingStalled(RuntimeError):
    """A run hit a hard cap (forwards per block, cycles per block) without finishing."""
