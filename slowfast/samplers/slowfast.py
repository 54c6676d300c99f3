"""SlowFast sampling (Wei et al. 2025): a cautious slow stage, then a parallel fast stage.

Inside each block, cycles repeat until the block is full:

* **slow** (exploratory): ``exploration_steps`` full forwards. Each estimates the horizon
  (certainty + position: the farthest masked position from the span start whose
  confidence reaches ``horizon_threshold``), pushes it onto a window of the last
  ``stability_window`` estimates, freezes the span end once their spread is below
  ``std_threshold`` (convergence), and cautiously decodes up to the block end: every
  masked position at or above ``high_confidence_threshold`` if there are at least two,
  else only the most confident one.
* **fast** (accelerated): the frozen span ``[start, end)`` is decoded with the same
  rule until it is full. Its first forward is full; later forwards feed only the canvas
  up to the span end and reuse the tail's last predictions (where the compute is saved).

``variant="reference"`` (default) is the published reference code, which produced the
paper's numbers: it always runs all exploration steps, even after the block is full (it
checks for a full block only when a cycle starts), and compares the window's population
std. ``stop_when_full=True`` is our improvement, off by default: a slow stage ends as soon
as its block is full, which saves the forwards that can decode nothing. ``variant="paper"`` follows the paper's text where it differs: the slow
stage ends as soon as the span converges (at most ``exploration_steps`` = K_max steps),
the window's population variance is compared, and the defaults are tau_min_conf 0.1,
tau_high_conf 0.85, K_max 8, W_hist 2, variance < 1.0.

``variant="dream"`` is the published code's Dream sampler (``_slow_fast_sample``): no blocks
(block_length must equal gen_length), horizon threshold 0.1, slow-stage parallel decode at
``slow_confidence_threshold`` 0.8 (at least two), fast stage at 0.9, a window of 2 compared
by its unbiased (n - 1) variance <= 1.0, span end round(mean) while unstable, and a slow
stage that ends as soon as the canvas is full. As in that code the window starts each cycle
filled with zeros (its first estimate is compared against a zero), so the first cycle
freezes at once when its first estimate is 1, and every position's token is its most likely
one whatever the run's temperature (that code takes ``softmax(logits).max()`` and never
reads the temperature; the other variants sample at temperature > 0 as LLaDA's code does).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..params import Param, dataclass_of_params
from .base import Decision, DecodingStalled, Layout, Observation, Policy, Scoring, Stage, Thresholds, top_positions

# The published defaults of the other variants (the reference code's are the table's, ``PARAMS``).
VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "reference": {},
    "paper": dict(exploration_steps=8, horizon_threshold=0.1, stability_window=2,
                  std_threshold=1.0, high_confidence_threshold=0.85),
    # the reference's Dream sampler: conf_threshold_cycle_len_pred, stabilize_count,
    # cycle_len_variance_threshold (unbiased variance), high_conf_for_cycle_decode,
    # high_conf_for_parallel_decode_discovery; it has no cycle cap (cycles <= gen_length)
    "dream": dict(exploration_steps=6, horizon_threshold=0.1, stability_window=2,
                  std_threshold=1.0, high_confidence_threshold=0.9, slow_confidence_threshold=0.8,
                  max_cycles=4096),
}
# the parameters whose default depends on the variant
VARIANT_PARAMS = tuple(dict.fromkeys(name for d in VARIANT_DEFAULTS.values() for name in d))
DEFAULT_MAX_CYCLES = 256


@dataclass(frozen=True)
class SlowFastInfo:
    """What a SlowFast step says beyond the generic record fields (its ``StepRecord.info``):
    the cycle (slow stage then fast stage) within the block, and in the slow stage this
    forward's horizon estimate (span end, a generated position) and whether the span end is
    frozen for the cycle. Views read records through ``SlowFastInfo.of``."""

    cycle: int
    estimate: Optional[int] = None  # slow stage only
    frozen: Optional[bool] = None  # slow stage only

    def to_info(self) -> dict:
        info: dict = {"cycle": self.cycle}
        if self.estimate is not None:
            info["estimate"] = self.estimate
        if self.frozen is not None:
            info["frozen"] = self.frozen
        return info

    @classmethod
    def of(cls, record) -> Optional["SlowFastInfo"]:
        """The info of a SlowFast record (None for other samplers' records)."""
        info = getattr(record, "info", None) or {}
        if "cycle" not in info:
            return None
        estimate = info.get("estimate")
        frozen = info.get("frozen")
        return cls(cycle=int(info["cycle"]), estimate=None if estimate is None else int(estimate),
                   frozen=None if frozen is None else bool(frozen))
MIN_PARALLEL = 2  # decode in parallel only when at least this many positions are confident


def cautious_decode(conf: np.ndarray, candidates: np.ndarray, threshold: float) -> np.ndarray:
    """All candidates with confidence >= threshold if there are at least two, else the top one."""
    sure = np.flatnonzero(candidates & (conf >= threshold))
    if sure.size >= MIN_PARALLEL:
        return sure
    return top_positions(conf, candidates, 1)


def horizon_increment(conf: np.ndarray, masked: np.ndarray, threshold: float) -> int:
    """Offset + 1 of the farthest masked position with confidence >= threshold, else 1."""
    hits = np.flatnonzero(masked & (conf >= threshold))
    return int(hits[-1]) + 1 if hits.size else 1


@dataclass_of_params
class SlowFastPolicy(Policy):
    name = "slowfast"
    TITLE = "SlowFast"
    STAGES = (Stage.SLOW, Stage.FAST)
    PARAMS = (
        Param("variant", "slowfast", "reference", meaning="reference = the published code; paper = the paper's "
              "text; dream = the published Dream code", choices=tuple(VARIANT_DEFAULTS), label="Variant"),
        Param("exploration_steps", "slowfast", 6, 1, 16, "full forwards per slow stage",
              reference="k_exploration_steps", paper="K_max", minimum=1, step=1,
              label="Exploration steps (slow stage)"),
        Param("horizon_threshold", "slowfast", 0.3, 0, 1, "certainty a masked position needs to extend the horizon",
              reference="cycle_len_confidence_threshold", paper="tau_min_conf", minimum=0, maximum=1, step=0.01,
              label="Horizon confidence threshold"),
        Param("stability_window", "slowfast", 2, 1, 8, "horizon estimates compared for convergence",
              reference="cycle_length_stability_window", paper="W_hist", minimum=1, step=1, label="Stability window"),
        # on the std (reference), the variance (paper) or the unbiased variance (dream)
        Param("std_threshold", "slowfast", 1.0, 0, 5, "the span freezes when the window's spread is below this",
              reference="cycle_length_stability_std_dev_threshold", minimum=0, step=0.1, label="Stability threshold"),
        Param("high_confidence_threshold", "slowfast", 0.9, 0, 1,
              "decode every position at or above this if there are at least two, else the single most certain",
              reference="high_confidence_threshold", paper="tau_high_conf", minimum=0, maximum=1, step=0.01,
              label="High-confidence threshold"),
        Param("max_cycles", "slowfast", None, 0, 4096, "slow/fast cycle cap per block",
              reference="max_sub_cycles_per_block", unset="256 (dream: 4096)", kind=int, off=0, minimum=1, step=1,
              label="Cycle cap per block (0 = default)"),
        Param("stop_when_full", "slowfast", False, meaning="ours: end a slow stage as soon as its block is full "
              "(the published code runs all its forwards)", label="Stop a slow stage when the block is full"),
        Param("slow_confidence_threshold", "slowfast", None, 0, 1, "the slow stage's parallel-decode threshold",
              reference="high_conf_for_parallel_decode_discovery", unset="the high-confidence threshold (dream: 0.8)",
              kind=float, off=0.0, minimum=0, maximum=1, step=0.01, label="Slow-stage threshold (0 = high-confidence)"),
    )

    def __post_init__(self) -> None:
        variant = next(p for p in self.PARAMS if p.name == "variant")
        if self.variant is None:
            self.variant = variant.default
        variant.check(self.variant)
        for key, value in VARIANT_DEFAULTS[self.variant].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        super().__post_init__()  # the rest: the table's defaults (the reference code's)
        if self.max_cycles is None:
            self.max_cycles = DEFAULT_MAX_CYCLES

    # --- state -----------------------------------------------------------------------------
    def check_layout(self, layout: Layout) -> None:
        if self.variant == "dream" and layout.block_length != layout.gen_length:
            raise ValueError(
                f"block_length: {layout.block_length} is not allowed for SlowFast's dream variant; its code has "
                f"no blocks: set block_length = gen_length ({layout.gen_length})"
            )

    def reset(self, layout: Layout, rng: np.random.Generator) -> None:
        self.layout = layout
        self.block = 0
        self.finished = False
        self._start_block()

    def _start_block(self) -> None:
        self.last_len = 0  # offset from the block start where the next span starts
        self.cycle = 0
        self._start_cycle()

    def _start_cycle(self) -> None:
        self.cycle += 1
        # raised by the next decide(), so the forward that ended the last cycle is recorded
        self.stalled = self.cycle > self.max_cycles
        self.stage = Stage.SLOW
        self.slow_steps = 0
        self.window: deque[int] = deque(maxlen=self.stability_window)
        if self.variant == "dream":  # the reference's history starts each cycle as zeros
            self.window.extend([0] * self.stability_window)
        self.span_end: Optional[int] = None  # frozen span end (offset from the block start)
        self.fast_forwards = 0

    def _spread(self) -> float:
        values = np.asarray(self.window, dtype=np.float64)
        if self.variant == "dream":  # torch.var(unbiased=True); a window of one counts as stable
            return float(values.var(ddof=1)) if values.size > 1 else 0.0
        return float(values.var() if self.variant == "paper" else values.std())

    def _converged(self) -> bool:
        if self.variant == "dream":
            return self._spread() <= self.std_threshold
        return self._spread() < self.std_threshold

    def _unstable_end(self) -> int:
        """The span end while the window has not converged: its mean, truncated (LLaDA
        code) or rounded half to even and at least 1 (Dream code, torch.round)."""
        if self.variant == "dream":
            return max(1, int(np.round(np.mean(self.window))))
        return int(np.mean(self.window))

    def scoring(self) -> Optional[Scoring]:
        """The dream variant takes the most likely token at any temperature, as the published
        Dream code does; the other variants use the engine's LLaDA rule (None)."""
        return Scoring(greedy=True) if self.variant == "dream" else None

    def thresholds(self) -> Thresholds:
        return Thresholds(
            high_confidence=self.high_confidence_threshold,
            slow_confidence=(self.high_confidence_threshold if self.slow_confidence_threshold is None
                             else self.slow_confidence_threshold),
            horizon=self.horizon_threshold, spread=self.std_threshold,
            spread_measure={"paper": "variance", "dream": "unbiased variance"}.get(self.variant, "standard deviation"),
            spread_inclusive=self.variant == "dream", stability_window=self.stability_window,
            exploration_steps=self.exploration_steps,
        )

    # --- one forward's decision -------------------------------------------------------------
    def decide(self, obs: Observation) -> Decision:
        if self.stalled:
            raise DecodingStalled(
                f"slowfast: block {self.block} still has masks after max_cycles={self.max_cycles} cycles"
            )
        bl = self.layout.block_length
        bs, be = self.layout.block_bounds(self.block)
        start = bs + self.last_len
        conf, masked = obs.confidence, obs.mask
        scope = np.zeros_like(masked)
        scope[start:be] = masked[start:be]
        if self.stage == Stage.SLOW:
            increment = horizon_increment(conf[start:be], masked[start:be], self.horizon_threshold)
            estimate = int(np.clip(self.last_len + increment, 1, bl))
            self.slow_steps += 1
            if self.span_end is None:
                self.window.append(estimate)
                full = len(self.window) == self.stability_window
                if full and self._converged():
                    self.span_end = estimate
                elif self.slow_steps >= self.exploration_steps:
                    self.span_end = self._unstable_end() if self.window else bl // 2
            end = self.span_end if self.span_end is not None else self._unstable_end()
            info = SlowFastInfo(cycle=self.cycle, estimate=bs + estimate, frozen=self.span_end is not None)
            slow_threshold = (self.high_confidence_threshold if self.slow_confidence_threshold is None
                              else self.slow_confidence_threshold)
            decision = Decision(
                decode=cautious_decode(conf, scope, slow_threshold),
                stage=Stage.SLOW, block=self.block, span=(start, max(start, bs + end)),
                horizons=[bs + e for e in self.window], horizon_spread=self._spread(), info=info.to_info(),
            )
            done = self.slow_steps >= self.exploration_steps or (
                self.variant == "paper" and self.span_end is not None
            )
            if done:
                self.stage = Stage.FAST
        else:
            span = np.zeros_like(masked)
            span[start:bs + self.span_end] = masked[start:bs + self.span_end]
            self.fast_forwards += 1
            decision = Decision(
                decode=cautious_decode(conf, span, self.high_confidence_threshold),
                stage=Stage.FAST, block=self.block, span=(start, max(start, bs + self.span_end)),
                info=SlowFastInfo(cycle=self.cycle).to_info(),
            )
        self._advance(masked, decision.decode)
        if self.stage == Stage.FAST and self.fast_forwards > 0:
            decision.next_extent = self.layout.block_bounds(self.block)[0] + self.span_end
        return decision

    def done(self, mask: np.ndarray) -> bool:
        return self.finished

    def current_block(self) -> Optional[int]:
        """The block it is in: it may be full while the slow stage runs its last forwards."""
        return self.block

    def _advance(self, masked: np.ndarray, decoded: np.ndarray) -> None:
        """Move to the next cycle or block once the current span or block is full.

        As in the published code, a full block ends the slow stage early only with
        ``stop_when_full``; otherwise the stage runs its remaining forwards (they decode
        nothing) and the block is left when the next cycle would start.
        """
        after = masked.copy()
        after[decoded] = False
        bs, be = self.layout.block_bounds(self.block)
        block_full = not after[bs:be].any()
        if self.stage == Stage.SLOW:
            if block_full and (self.stop_when_full or self.variant == "dream"):
                self._next_block()
            return
        if not after[bs + self.last_len: bs + self.span_end].any():
            if block_full:
                self._next_block()
            else:
                self.last_len = self.span_end
                self._start_cycle()

    def _next_block(self) -> None:
        if self.block + 1 < self.layout.num_blocks:
            self.block += 1
            self._start_block()
        else:
            self.finished = True


def variant_defaults(variant: str) -> dict[str, Any]:
    """The defaults of the parameters that depend on the variant (None: unset), for the app's sliders."""
    table = {p.name: p.default for p in SlowFastPolicy.PARAMS if p.name in VARIANT_PARAMS}
    return {**table, **VARIANT_DEFAULTS[variant]}
