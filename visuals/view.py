"""A Trace as of one step, as numpy arrays: what every figure draws from.

Pure numpy; no Plotly here. ``TraceView(trace, step)`` cuts the records at ``step``
(inclusive; None = the last record) and derives, without per-cell Python loops, the
step x position matrices (confidence, argmax), which step unmasked each position, the
span per step, the stages and the sampler's thresholds.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any, Callable, Optional

import numpy as np

from slowfast.samplers import Stage, Thresholds, thresholds_of
from slowfast.samplers.slowfast import SlowFastInfo

MASK_GLYPH = "▒"
STAGES = Stage.ALL
STAGE_COLORS = {Stage.SLOW: "#1f77b4", Stage.FAST: "#ff7f0e", Stage.BASELINE: "#7f7f7f", Stage.THRESHOLD: "#2ca02c"}
STAGE_LIGHT = {Stage.SLOW: "#aec7e8", Stage.FAST: "#ffbb78", Stage.BASELINE: "#d0d0d0", Stage.THRESHOLD: "#98df8a"}
OTHER_COLOR, OTHER_LIGHT = "#9467bd", "#c5b0d5"
VISIBLE_WHITESPACE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})


def stage_color(stage: str, light: bool = False) -> str:
    table = STAGE_LIGHT if light else STAGE_COLORS
    return table.get(stage, OTHER_LIGHT if light else OTHER_COLOR)


class TraceView:
    """``trace`` as of record index ``step`` (inclusive; None = last; clamped to the records)."""

    def __init__(self, trace: Any, step: Optional[int] = None):
        self.trace = trace
        records = list(trace.records)
        self.n_total = len(records)
        if step is None or self.n_total == 0:
            last = self.n_total - 1
        else:
            step = int(step)
            if step < 0:
                step += self.n_total
            last = min(max(step, 0), self.n_total - 1)
        self.last = last  # index of the record shown (-1: no records)
        self.records = records[: last + 1]
        self.n = len(self.records)
        self.gen_length = int(trace.gen_length)
        self.settings = trace.settings or {}
        self.limits: Thresholds = thresholds_of(self.settings)  # the sampler's own, by its policy
        self.sampler = str(self.settings.get("sampler", "?"))
        self.block_length = int(self.settings.get("block_length") or self.gen_length)
        self.steps = np.arange(self.n)

    @property
    def empty(self) -> bool:
        return self.n == 0

    @property
    def record(self):
        return self.records[-1] if self.records else None

    @property
    def is_last(self) -> bool:
        return self.last == self.n_total - 1

    # --- step x position matrices ------------------------------------------------------------
    @cached_property
    def confidence(self) -> np.ndarray:
        """float32 [steps, gen_length]."""
        if not self.records:
            return np.zeros((0, self.gen_length), dtype=np.float32)
        return np.stack([r.confidence for r in self.records]).astype(np.float32)

    @cached_property
    def argmax(self) -> np.ndarray:
        """int64 [steps, gen_length]."""
        if not self.records:
            return np.zeros((0, self.gen_length), dtype=np.int64)
        return np.stack([r.argmax for r in self.records]).astype(np.int64)

    @cached_property
    def decoded_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, positions) of every unmasking up to this step, flattened."""
        lens = [len(r.decoded) for r in self.records]
        pos = np.fromiter((p for r in self.records for p in r.decoded), dtype=np.int64, count=sum(lens))
        return np.repeat(self.steps, lens), pos

    @cached_property
    def decoded_at(self) -> np.ndarray:
        """Per position, the step that unmasked it as of this step (-1: still masked)."""
        out = np.full(self.gen_length, -1, dtype=np.int64)
        st, pos = self.decoded_pairs
        out[pos] = st
        return out

    @cached_property
    def tokens(self) -> np.ndarray:
        """Per position, the committed token id as of this step (mask id where masked)."""
        da = self.decoded_at
        out = np.full(self.gen_length, int(self.trace.mask_id), dtype=np.int64)
        done = np.flatnonzero(da >= 0)
        if done.size:
            out[done] = self.argmax[da[done], done]
        for i, r in enumerate(self.records):  # llada2's editing: a decoded position takes the step's prediction
            for p in r.edited or ():
                out[p] = self.argmax[i, p]
        return out

    @cached_property
    def decode_confidence(self) -> np.ndarray:
        """Per position, its confidence in the step that unmasked it (NaN: masked)."""
        da = self.decoded_at
        out = np.full(self.gen_length, np.nan, dtype=np.float32)
        done = np.flatnonzero(da >= 0)
        if done.size:
            out[done] = self.confidence[da[done], done]
        return out

    def masked_before(self) -> np.ndarray:
        """bool [steps, gen_length]: still masked when that step's forward ran."""
        da = self.decoded_at
        return (da[None, :] < 0) | (da[None, :] >= self.steps[:, None])

    # --- per step ------------------------------------------------------------------------------
    @cached_property
    def spans(self) -> np.ndarray:
        """float [steps, 2]: span [start, end) per step, NaN where the record has none."""
        out = np.full((self.n, 2), np.nan)
        for i, r in enumerate(self.records):
            if r.span is not None:
                out[i] = r.span
        return out

    @cached_property
    def stages(self) -> list[str]:
        return [str(r.stage) for r in self.records]

    @cached_property
    def blocks(self) -> np.ndarray:
        return np.array([int(r.block) for r in self.records], dtype=np.int64)

    def per_step(self, name: str, dtype=float) -> np.ndarray:
        return np.array([getattr(r, name) for r in self.records], dtype=dtype)

    @cached_property
    def freezes(self) -> list[tuple[int, bool]]:
        """(step, converged) where a SlowFast span froze: the first record of each cycle with
        info['frozen'] True; converged = the window's spread was below the threshold (else the
        exploration cap forced it)."""
        seen, out = set(), []
        for i, r in enumerate(self.records):
            info = SlowFastInfo.of(r)
            if info is None or not info.frozen:
                continue
            key = (r.block, info.cycle)
            if key in seen:
                continue
            seen.add(key)
            out.append((i, self.limits.stable(r.horizon_spread)))
        return out

    # --- settings --------------------------------------------------------------------------------
    def thresholds(self) -> list[tuple[float, str]]:
        """The sampler's confidence thresholds, ascending, with a label each."""
        return self.limits.lines()

    def block_edges(self) -> list[int]:
        """Inner block boundaries (positions where a new block starts)."""
        bl = self.block_length
        return list(range(bl, self.gen_length, bl)) if 0 < bl < self.gen_length else []

    # --- text --------------------------------------------------------------------------------------
    def token_text(self, token_id: int) -> str:
        """Display text of a token id: whitespace made visible, the mask as a glyph."""
        if int(token_id) == int(self.trace.mask_id):
            return MASK_GLYPH
        s = (self.trace.token_strings or {}).get(str(int(token_id)))
        if s is None:
            return f"#{int(token_id)}"
        return s.translate(VISIBLE_WHITESPACE) if s else "∅"

    def step_label(self, text: Callable[[Any], str] = str) -> str:
        """"step i/n · stage · span [a, b) · k/G decoded"; ``text`` formats the record's values
        (pass ``common.esc`` for HTML or Plotly: a stage comes from the trace)."""
        if self.empty:
            return "no steps yet"
        r = self.record
        span = f" · span [{text(r.span[0])}, {text(r.span[1])})" if r.span is not None else ""
        done = int((self.decoded_at >= 0).sum())
        return f"step {self.last}/{self.n_total - 1} · {text(r.stage)}{span} · {done}/{self.gen_length} decoded"
