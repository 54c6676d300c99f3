"""What you are seeing: the current step in words, for someone who has not read the paper.

A pure function of a Trace and a step (Markdown out), like the figures: the stage, where
the span is and why (the horizon estimates against the threshold, the stability test and
its value), which positions this forward decoded and by which rule.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from slowfast.samplers import Stage
from slowfast.samplers.slowfast import SlowFastInfo

from .common import esc
from .view import TraceView

PAPER = "https://arxiv.org/abs/2506.10848"
MAX_LISTED = 10

INTRO = (
    "A diffusion LLM starts from a canvas of masks and, at every forward pass, predicts a token "
    "and a certainty for each masked position; the sampler decides which of them to commit. "
    f"[SlowFast sampling]({PAPER}) alternates two stages. The **slow** stage runs a few full "
    "forwards, cautiously decoding only what is very certain, while it *estimates how far ahead "
    "the model is sure* (the horizon). Once the estimates agree, the span up to the horizon is "
    "frozen and the **fast** stage decodes it in parallel, feeding the model only the canvas up "
    "to the span end. Then the next slow stage starts where the span ended."
)


def _positions(view: TraceView, positions: list[int]) -> str:
    trace = view.trace
    shown = []
    for p in positions[:MAX_LISTED]:
        tok = int(view.record.argmax[p])
        text = (getattr(trace, "token_strings", {}) or {}).get(str(tok), str(tok))
        shown.append(f"{p} `{esc(text).replace('`', 'ˋ')}`")
    more = f" and {len(positions) - MAX_LISTED} more" if len(positions) > MAX_LISTED else ""
    return ", ".join(shown) + more


def _slow_index(view: TraceView) -> tuple[int, int]:
    """(this forward's number within its slow stage, 1-based; the cycle)."""
    recs = view.records
    cycle = _cycle(recs[-1])
    k = 0
    for r in reversed(recs):
        if r.stage != Stage.SLOW or _cycle(r) != cycle or r.block != recs[-1].block:
            break
        k += 1
    return k, cycle


def _cycle(record) -> Optional[int]:
    info = SlowFastInfo.of(record)
    return None if info is None else info.cycle


def _g(value) -> str:
    """A threshold as written in the text ("?" when the trace's settings do not say)."""
    return "?" if value is None else f"{value:g}"


def _decoded_rule(view: TraceView, threshold: Optional[float], scope: str) -> str:
    r = view.record
    decoded = list(r.decoded)
    conf = r.confidence.astype(np.float32)
    if not decoded:
        return ("Nothing was decoded: no masked position is left where this stage may decode. The "
                "published code still runs the slow stage's remaining forwards (our `stop_when_full` "
                "option skips them).")
    if len(decoded) >= 2:
        return (f"Decoded **{len(decoded)} positions in parallel** ({_positions(view, decoded)}): every "
                f"masked position {scope} whose certainty reached the high-confidence threshold "
                f"{_g(threshold)}.")
    p = decoded[0]
    return (f"Decoded **one position** ({_positions(view, decoded)}, certainty {conf[p]:.2f}): fewer than two "
            f"masked positions {scope} reached {_g(threshold)}, so the rule falls back to the single most "
            "certain one.")


def _slowfast(view: TraceView) -> list[str]:
    r, lim = view.record, view.limits
    info = SlowFastInfo.of(r) or SlowFastInfo(cycle=0)
    window = lim.stability_window if lim.stability_window is not None else "?"
    below, above = ("<=", ">") if lim.spread_inclusive else ("<", ">=")
    start, end = r.span if r.span is not None else (0, view.gen_length)
    lines = []
    if r.stage == Stage.SLOW:
        k, cycle = _slow_index(view)
        lines.append(f"**Slow stage**, exploration forward {k} of {_g(lim.exploration_steps)} (cycle {cycle}, "
                     f"block {r.block}).")
        prev = view.records[-2] if view.n > 1 else None
        prev_info = SlowFastInfo.of(prev) if prev is not None else None
        frozen_before = (prev is not None and prev.stage == Stage.SLOW and prev.block == r.block
                         and prev_info is not None and prev_info.cycle == info.cycle and prev_info.frozen)
        if info.estimate is not None:
            lines.append(f"**Horizon estimate: position {info.estimate}.** It is the farthest position after the "
                         f"span start ({start}), still masked when this forward ran, whose certainty reaches the "
                         f"horizon threshold {_g(lim.horizon)} (position and certainty: the model is sure that far "
                         "ahead).")
        horizons = r.horizons or []
        if frozen_before:
            lines.append(f"**Converged earlier in this slow stage:** the span end was frozen at {end} when the "
                         f"window's estimates {horizons} agreed; this forward's estimate no longer moves it. The "
                         f"reference code still runs all {_g(lim.exploration_steps)} exploration forwards, decoding "
                         f"what is certain; then the fast stage decodes what is left of [{start}, {end}).")
        elif info.frozen:
            lines.append(f"**Converged:** the last {window} estimates {horizons} have a {lim.spread_measure} of "
                         f"{(r.horizon_spread or 0):.2f} {below} {_g(lim.spread)} (or the slow stage used all its "
                         f"forwards), so the span is frozen at [{start}, {end}); the fast stage will decode it.")
        elif isinstance(window, int) and len(horizons) < window:
            lines.append(f"**Not converged yet:** {len(horizons)} of the {window} estimates the stability test "
                         f"compares; the span [{start}, {end}) is provisional.")
        else:
            lines.append(f"**Not converged:** the last {window} estimates {horizons} have a {lim.spread_measure} "
                         f"of {(r.horizon_spread or 0):.2f} {above} {_g(lim.spread)}, so the span keeps moving "
                         f"(shown at [{start}, {end})).")
        lines.append(_decoded_rule(view, lim.slow_confidence, "anywhere from the span start to the block end"))
        outside = [p for p in r.decoded if p >= end]
        if outside:
            lines.append(f"{len(outside)} of them lie beyond the current span end ({end}): the slow stage may "
                         "decode anywhere in the rest of the block, as the reference code does; the span only "
                         "bounds the fast stage.")
    elif r.stage == Stage.FAST:
        lines.append(f"**Fast stage** on the frozen span [{start}, {end}) (cycle {info.cycle}, block {r.block}).")
        prev = view.records[-2] if view.n > 1 else None
        first_fast = prev is None or prev.stage != Stage.FAST or _cycle(prev) != info.cycle
        if r.fed_end < view.gen_length:
            lines.append(f"This forward fed only the canvas up to position {r.fed_end} ({r.tokens_fed} tokens): "
                         "the positions after the span reuse the last predictions, which is where the fast "
                         "stage saves compute.")
        elif end >= view.gen_length:
            lines.append("The span reaches the end of the canvas, so this forward sees all of it.")
        elif first_fast:
            lines.append("The first fast forward sees the whole canvas; the next ones feed only up to the span "
                         "end.")
        lines.append(_decoded_rule(view, lim.high_confidence, "inside the span"))
    return lines


def explain_step(trace: Any, step: Optional[int] = None) -> str:
    """Markdown: what the decoder did at record ``step`` (None = the last) and why."""
    if trace is None:
        return f"### What you are seeing\n\nRun something, or replay a trace. {INTRO}"
    view = TraceView(trace, step)
    if view.empty:
        return f"### What you are seeing\n\nNo steps yet. {INTRO}"
    r = view.record
    head = (f"### What you are seeing: step {view.last} of {view.n_total - 1}\n\n"
            f"NFE {r.nfe} so far, {r.tokens_fed} tokens fed to this forward.")
    if r.stage in (Stage.SLOW, Stage.FAST):
        body = _slowfast(view)
    elif r.stage == Stage.BASELINE:
        rule = "at random" if view.limits.remasking == "random" else "the most certain"
        k = r.info.get("k", len(r.decoded))
        body = [f"**Baseline** (LLaDA's sampler), block {r.block}: each forward commits a fixed number of "
                f"tokens, here {k}, chosen {rule} among the block's masked positions "
                f"({_positions(view, list(r.decoded)) or 'none'}), whatever their certainty. "
                "One token per forward is the slow reference SlowFast is measured against."]
    elif r.stage == Stage.THRESHOLD:
        lim = view.limits
        rule = (f"Fast-dLLM's factor rule (factor {lim.factor:g})" if lim.factor
                else f"every masked position of the block with certainty >= {_g(lim.threshold)} (at least one)")
        body = [f"**Threshold** sampler (Fast-dLLM), block {r.block}: commits {rule}. This forward decoded "
                f"{len(r.decoded)}: {_positions(view, list(r.decoded)) or 'none'}. Unlike SlowFast it has no "
                "slow stage and estimates no horizon: its span is simply the current block"
                + (f" [{r.span[0]}, {r.span[1]})" if r.span is not None else "")
                + ", whatever the model is sure of."]
    else:
        body = [f"Stage `{esc(r.stage)}`: decoded {len(r.decoded)} positions."]
    return "\n\n".join([head, *body, f"<details><summary>What is SlowFast?</summary>\n\n{INTRO}\n\n</details>"])
