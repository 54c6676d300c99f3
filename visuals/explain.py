"""What you are seeing: the current step in words, for someone who has not read the paper.

A pure function of a Trace and a step (Markdown out), like the figures: the stage, where
the span is and why (the horizon estimate against the threshold, the stability test and
its value), which positions this forward decoded and by which rule, and what follows.

Every sentence is derived from the trace as of that step, so none can be false:

* a position is called masked only if it is still masked after this step (or, where the
  sentence says "when this forward ran", it was masked before this forward decoded);
  a full block is said to be full, and a forward that decodes nothing says why;
* a later stage, cycle or block is named only when the trace holds it; while a run is
  still being decoded (its summary neither finished, stopped nor ended by an error) what
  has not happened yet is phrased as a condition;
* every inequality printed holds for the printed numbers: a measured value is printed with
  as many digits as it takes (``_ineq``), a threshold as set.

Only this Markdown subset is used (another module turns it into HTML): paragraphs separated
by a blank line, **bold**, `code`, [links](url) and the one ``<details><summary>`` block.
"""
from __future__ import annotations

import operator
from typing import Any, Optional

import numpy as np

from slowfast.samplers import Stage
from slowfast.samplers.entropy_bound import DENOISE
from slowfast.samplers.llada2 import EDIT, UNMASK
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

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_NEGATION = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}


# --- numbers ------------------------------------------------------------------------------------------
def _g(value) -> str:
    """A setting as written in the text: exact (it is the number the run compared with)."""
    if value is None:
        return "?"
    short = f"{value:g}"
    return short if float(short) == float(value) else repr(float(value))


def _ineq(value: float, op: str, bound: float) -> str:
    """``"value op bound"`` that holds for the printed numbers: ``bound`` (a setting) exactly,
    ``value`` (a measurement) with 2 decimals, or as many more as it takes for the printed
    comparison to agree with the true one. If ``op`` is false for the true values, its
    negation is printed."""
    value, bound = float(value), float(bound)
    if not _OPS[op](value, bound):
        op = _NEGATION[op]
    b = _g(bound)
    for digits in range(2, 18):
        a = f"{value:.{digits}f}"
        if _OPS[op](float(a), float(b)):
            return f"{a} {op} {b}"
    return f"{value!r} {op} {b}"


def _c(value: float) -> str:
    """A certainty on its own (no comparison printed next to it)."""
    return f"{float(value):.2f}"


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --- what the trace says about this step ------------------------------------------------------------------
class _Step:
    """Record ``step`` of ``trace`` with what the explanation derives from it."""

    def __init__(self, trace: Any, step: Optional[int]):
        self.trace = trace
        self.view = view = TraceView(trace, step)
        self.i = view.last
        self.r = view.record
        self.G = view.gen_length
        self.all = list(trace.records)
        self.lim = view.limits
        if view.empty:
            return
        self.params = dict(view.settings.get("params") or {})
        da = view.decoded_at  # as of this step: -1 = still masked
        self.after = da < 0  # masked after this forward
        self.before = (da < 0) | (da == self.i)  # masked when this forward ran
        self.conf = np.asarray(self.r.confidence, dtype=np.float64)
        self.decoded = [int(p) for p in self.r.decoded]
        stats = trace.stats
        self.finished, self.stopped, self.error = bool(stats.finished), bool(stats.stopped), stats.error
        self.ended = self.finished or self.stopped or bool(self.error)  # no record will be added
        self.dream_sampler = view.sampler == "dream"
        if self.dream_sampler:  # Dream's own sampler has no blocks
            self.bs, self.be = 0, self.G
        else:
            bl = max(1, view.block_length)
            self.bs = min(int(self.r.block) * bl, self.G)
            self.be = min(self.bs + bl, self.G)

    # records of the whole trace
    def key(self, record) -> tuple[int, Optional[int]]:
        return int(record.block), _cycle(record)

    def same_cycle(self) -> list[int]:
        """Indices of the records of this record's block and cycle."""
        k = self.key(self.r)
        return [j for j, x in enumerate(self.all) if self.key(x) == k]

    def first_of(self, block: int, cycle: Optional[int] = None) -> Optional[int]:
        for j, x in enumerate(self.all):
            if int(x.block) == block and (cycle is None or _cycle(x) == cycle):
                return j
        return None

    def decoded_by(self, last: int) -> np.ndarray:
        """bool [gen_length]: decoded at or before record ``last`` (any record of the trace)."""
        out = np.zeros(self.G, dtype=bool)
        for x in self.all[: last + 1]:
            out[list(x.decoded)] = True
        return out

    # this step
    @property
    def block_size(self) -> int:
        return self.be - self.bs

    def block_done(self, when: str = "after") -> int:
        masked = self.after if when == "after" else self.before
        return int((~masked[self.bs:self.be]).sum())

    def listed(self, positions: list[int]) -> str:
        strings = getattr(self.trace, "token_strings", {}) or {}
        shown = []
        for p in positions[:MAX_LISTED]:
            tok = int(self.r.argmax[p])
            text = strings.get(str(tok), str(tok))
            shown.append(f"{p} `{esc(text).replace('`', 'ˋ')}`")
        more = f" and {len(positions) - MAX_LISTED} more" if len(positions) > MAX_LISTED else ""
        return ", ".join(shown) + more

    @property
    def is_last(self) -> bool:
        return self.i == len(self.all) - 1


def _cycle(record) -> Optional[int]:
    info = SlowFastInfo.of(record)
    return None if info is None else info.cycle


# --- sentences shared by the stages ---------------------------------------------------------------------------
def _unit(s: _Step) -> str:
    return "canvas" if s.dream_sampler else "block"


def _nothing_decoded(s: _Step, lo: int, hi: int, where: str) -> str:
    """Why this forward decoded nothing: the block was full, or nothing it may decode was masked."""
    n = s.block_size
    if s.block_done("before") == n:
        return f"The {_unit(s)} is full: {n}/{n} decoded; this forward decodes nothing."
    if not s.before[lo:hi].any():
        return f"Nothing {where} is masked any more, so this forward decodes nothing."
    return "This forward decodes nothing."


def _fills(s: _Step) -> list[str]:
    """The block's state after a forward that decoded something."""
    n = s.block_size
    if not s.decoded:
        return []
    done = s.block_done("after")
    if done == n:
        return [f"This forward fills the {_unit(s)}: {n}/{n} decoded."]
    return [f"The {_unit(s)} now has {done}/{n} decoded."]


def _after_full_block(s: _Step) -> list[str]:
    """What follows a forward after which the block is full (the next block, or the end)."""
    if s.block_done("after") != s.block_size or s.dream_sampler:
        return []
    nxt = s.first_of(int(s.r.block) + 1)
    if nxt is not None:
        return [f"The next block starts at step {nxt}."]
    return []


def _run_end(s: _Step) -> list[str]:
    if not (s.is_last and s.ended):
        return []
    if s.finished:
        return [f"This is the run's last forward: all {s.G} positions are decoded."]
    if s.stopped:
        return ["The run was stopped on request after this forward."]
    return [f"The engine ended the run after this forward: {esc(s.error)}"]


def _cautious(s: _Step, lo: int, hi: int, threshold: Optional[float], where: str) -> list[str]:
    """SlowFast's decode rule on [lo, hi): every position still masked when this forward ran
    whose certainty reached ``threshold`` if there are at least two, else the most certain one."""
    decoded = s.decoded
    if not decoded:
        return [_nothing_decoded(s, lo, hi, where)]
    cand = np.zeros(s.G, dtype=bool)
    cand[lo:hi] = s.before[lo:hi]
    T = _g(threshold)
    if len(decoded) >= 2:
        lowest = float(s.conf[decoded].min())
        note = (f" (the lowest certainty among them: {_ineq(lowest, '>=', threshold)})"
                if threshold is not None and lowest >= threshold else "")
        return [f"Decoded **{len(decoded)} positions in parallel** ({s.listed(decoded)}): every position "
                f"{where} still masked when this forward ran whose certainty reached the threshold {T}{note}."]
    p = decoded[0]
    cp = float(s.conf[p])
    head = f"Decoded **one position** ({s.listed(decoded)}"
    sure = int((cand & (s.conf >= threshold)).sum()) if threshold is not None else -1
    if threshold is not None and cp >= threshold and sure == 1:
        return [f"{head}): of the positions {where} still masked when this forward ran, it alone reached the "
                f"threshold {T} ({_ineq(cp, '>=', threshold)}). "
                "The rule decodes in parallel only when at least two reach it; otherwise it takes the single "
                "most certain one."]
    if threshold is not None and cp < threshold and sure == 0:
        return [f"{head}, certainty {_ineq(cp, '<', threshold)}): no position {where} still masked when this "
                f"forward ran reached the threshold {T}, so the rule falls back to the single most certain one."]
    return [f"{head}, certainty {_c(cp)}): fewer than two positions {where} still masked when this forward ran "
            f"reached the threshold {T}, so the rule takes the single most certain one."]


# --- SlowFast ------------------------------------------------------------------------------------------------
def _horizon(s: _Step, info: SlowFastInfo, start: int) -> list[str]:
    """This forward's horizon estimate: a span end, one past the farthest position from the span
    start still masked when this forward ran whose certainty reached the horizon threshold (one
    past the span start when there is none), checked against the trace's certainties."""
    e, h = info.estimate, s.lim.horizon
    H = _g(h)
    if e is None:
        return []
    lo, hi = max(0, min(start, s.be)), s.be
    masked = s.before[lo:hi]
    hits = (lo + np.flatnonzero(masked & (s.conf[lo:hi] >= h))) if h is not None else np.zeros(0, int)
    if h is not None and hits.size and int(hits[-1]) + 1 == e:
        p = int(hits[-1])
        return [f"**Horizon estimate: span end {e}.**",
                f"Position {p} is the farthest from the span start ({start}) that was still masked when this "
                f"forward ran and whose certainty reached the horizon threshold {H} "
                f"({_ineq(s.conf[p], '>=', h)}); the estimate is one past it."]
    if h is not None and hits.size and int(hits[-1]) == e:  # a trace that names the position itself
        return [f"**Horizon estimate: position {e}.**",
                f"It is the farthest position from the span start ({start}) still masked when this forward ran "
                f"whose certainty reached the horizon threshold {H} ({_ineq(s.conf[e], '>=', h)})."]
    if h is not None and not hits.size and e == lo + 1:
        head = f"**Horizon estimate: span end {e}**, the smallest it can be (one past the span start, {start}):"
        if not masked.any():
            return [f"{head} nothing from the span start to the block end was still masked when this forward ran."]
        top = float(s.conf[lo:hi][masked].max())
        return [f"{head} nothing from the span start to the block end that was still masked when this forward "
                f"ran reached the horizon threshold {H} (the most certain: {_ineq(top, '<', h)})."]
    return [f"**Horizon estimate: span end {e}.**",
            f"The sampler ends the span just after the farthest position it found still masked with a certainty "
            f"at or above the horizon threshold {H}, or one past the span start when there is none; the "
            "certainties stored in this trace (half precision) do not single that position out."]


def _stability(s: _Step, info: SlowFastInfo, k: int, start: int, end: int) -> list[str]:
    r, lim = s.r, s.lim
    horizons = list(r.horizons or [])
    window = lim.stability_window
    measure = lim.spread_measure
    below, above = ("<=", ">") if lim.spread_inclusive else ("<", ">=")
    spread = r.horizon_spread
    block, cycle = int(r.block), info.cycle
    earlier = [j for j in range(s.i) if s.all[j].stage == Stage.SLOW and s.key(s.all[j]) == (block, cycle)
               and (SlowFastInfo.of(s.all[j]) or info).frozen]
    if earlier:
        f = earlier[0]
        first = s.all[f]
        how = (f"when the window's estimates {list(first.horizons or [])} agreed"
               if lim.stable(first.horizon_spread) else "at the slow stage's last exploration forward")
        return [f"**Converged earlier in this slow stage:** the span end was frozen at {end} at step {f}, {how}; "
                "this forward's estimate no longer moves it."]
    if info.frozen:
        if spread is None or lim.spread is None:
            return [f"**Converged:** the span end is frozen: the span is [{start}, {end})."]
        if lim.stable(spread):
            return [f"**Converged:** the last {len(horizons)} estimates {horizons} have {_a(measure)} of "
                    f"{_ineq(spread, below, lim.spread)}, so the span end is frozen: the span is [{start}, {end})."]
        cap = lim.exploration_steps
        why = (f"this is the slow stage's last exploration forward ({k} of {cap})" if cap is not None and k >= cap
               else "the slow stage ends here")
        return [f"**Not converged, but {why}:** the last {len(horizons)} estimates {horizons} have {_a(measure)} of "
                f"{_ineq(spread, above, lim.spread)}; the span end is frozen anyway, at {end}: the span is "
                f"[{start}, {end})."]
    if isinstance(window, int) and len(horizons) < window:
        return [f"**Not converged yet:** {len(horizons)} of the {window} estimates the stability test compares; "
                f"the span [{start}, {end}) is provisional."]
    if spread is None or lim.spread is None:
        return [f"**Not converged:** the span [{start}, {end}) is provisional."]
    return [f"**Not converged:** the last {len(horizons)} estimates {horizons} have {_a(measure)} of "
            f"{_ineq(spread, above, lim.spread)}, so the span is provisional: [{start}, {end}) for now."]


def _slow_next(s: _Step, info: SlowFastInfo, start: int, end: int) -> list[str]:
    """What follows in this cycle after this slow forward, as far as the trace shows it."""
    same = s.same_cycle()
    later_slow = [j for j in same if j > s.i and s.all[j].stage == Stage.SLOW]
    full = s.block_done("after") == s.block_size
    out: list[str] = []
    variant = s.params.get("variant", "reference")
    who = "the sampler (the paper's variant)" if variant == "paper" else "the published code"
    if later_slow and full:
        skip = " (our `stop_when_full` option skips them)" if not s.params.get("stop_when_full") else ""
        out.append(f"The block is full, but {who} still runs this slow stage's remaining "
                   f"{_plural(len(later_slow), 'exploration forward')} (to step {later_slow[-1]}), which decode "
                   f"nothing{skip}.")
    elif later_slow and info.frozen:
        out.append(f"This slow stage still runs {_plural(len(later_slow), 'more exploration forward')} (to step "
                   f"{later_slow[-1]}), decoding what is certain, as {who} does.")
    if not info.frozen:
        return out + (_after_full_block(s) if full and not later_slow else [])
    fast = [j for j in same if s.all[j].stage == Stage.FAST]
    if fast:
        out.append(f"The fast stage follows at step {fast[0]} and decodes what the slow stage leaves of "
                   f"[{start}, {end}).")
        return out
    last = max(same)
    if not s.ended and last == len(s.all) - 1:  # a live run: its slow stage may still be running
        if end <= start or not s.after[start:end].any():
            out.append(f"The span [{start}, {end}) is already fully decoded: this cycle needs no fast stage.")
        else:
            out.append(f"If positions of [{start}, {end}) remain masked when the slow stage ends, a fast stage "
                       "decodes them.")
        return out
    if end <= start or s.decoded_by(last)[start:end].all():
        out.append(f"By the end of its slow stage (step {last}) the span [{start}, {end}) is fully decoded, so "
                   "this cycle has no fast stage.")
    else:
        out.append(f"The run ended at step {last}, before a fast stage.")
    block = int(s.r.block)
    nxt = s.first_of(block, info.cycle + 1)
    if nxt is not None:
        out.append(f"The next cycle starts at step {nxt}, from the span end ({end}).")
    else:
        nb = s.first_of(block + 1)
        if nb is not None:
            out.append(f"The next block starts at step {nb}.")
    return out


def _slow(s: _Step) -> list[list[str]]:
    r, lim = s.r, s.lim
    info = SlowFastInfo.of(r) or SlowFastInfo(cycle=0)
    block = int(r.block)
    k = sum(1 for j in s.same_cycle() if j <= s.i and s.all[j].stage == Stage.SLOW)
    K = lim.exploration_steps
    runs_all = s.params.get("variant", "reference") == "reference" and not s.params.get("stop_when_full")
    of = f"of {_g(K)}" if runs_all else f"of at most {_g(K)}"
    start, end = (int(r.span[0]), int(r.span[1])) if r.span is not None else (s.bs, s.be)
    paragraphs = [[f"**Slow stage**, exploration forward {k} {of} (cycle {info.cycle}, block {block})."],
                  _horizon(s, info, start), _stability(s, info, k, start, end)]
    decode = _cautious(s, start, s.be, lim.slow_confidence, "from the span start to the block end") + _fills(s)
    outside = [p for p in s.decoded if p >= end]
    if outside:
        decode.append(f"{len(outside)} of them lie beyond the current span end ({end}): the slow stage may decode "
                      "anywhere from the span start to the block end, as the reference code does; the span limits "
                      "only the fast forwards.")
    paragraphs += [decode, _slow_next(s, info, start, end)]
    return paragraphs


def _fast(s: _Step) -> list[list[str]]:
    r = s.r
    info = SlowFastInfo.of(r) or SlowFastInfo(cycle=0)
    block = int(r.block)
    start, end = (int(r.span[0]), int(r.span[1])) if r.span is not None else (s.bs, s.be)
    same = s.same_cycle()
    fast = [j for j in same if s.all[j].stage == Stage.FAST]
    j = sum(1 for x in fast if x <= s.i)
    paragraphs = [[f"**Fast stage** on the frozen span [{start}, {end}) (cycle {info.cycle}, block {block}): "
                   f"fast forward {j}."]]
    later_fast = [x for x in fast if x > s.i]
    if r.fed_end < s.G:
        fed = [f"This forward fed the model only the generated canvas before {r.fed_end} ({r.tokens_fed} tokens "
               f"with the prompt): the rest reuses the predictions of the last forward that saw it, which is "
               "where the fast stage saves compute."]
    elif end >= s.G:
        fed = ["The span reaches the end of the canvas, so this forward sees all of it."]
    elif j == 1:
        fed = ["The first forward of a fast stage feeds the whole canvas."]
        if later_fast:
            fed.append(f"The next ones (from step {later_fast[0]}) feed only the canvas before the span end ({end}).")
    else:
        fed = ["This forward fed the whole canvas."]
    paragraphs.append(fed)
    decode = _cautious(s, start, end, s.lim.high_confidence, "inside the span")
    decode += _fills(s)
    paragraphs.append(decode)
    left = int(s.after[start:end].sum()) if end > start else 0
    nxt: list[str] = []
    if left:
        nxt.append(f"{_plural(left, 'position')} of the span remain masked." if left > 1
                   else "1 position of the span remains masked.")
        if s.i + 1 in later_fast:
            nxt.append(f"The next fast forward (step {s.i + 1}) goes on with them.")
        elif not s.ended and s.is_last:
            nxt.append("Fast forwards go on while any remain, if the run goes on.")
    else:
        nxt.append(f"The span [{start}, {end}) is now fully decoded.")
        cyc = s.first_of(block, info.cycle + 1)
        if s.block_done("after") == s.block_size:
            nxt += _after_full_block(s)
            if not s.ended and s.is_last and s.first_of(block + 1) is None and s.be < s.G:
                nxt.append("If the run goes on, the next block starts.")
        elif cyc is not None:
            nxt.append(f"The next cycle starts at step {cyc} with a slow stage from the span end ({end}).")
        elif not s.ended and s.is_last:
            nxt.append(f"If the run goes on, the next cycle's slow stage starts from the span end ({end}).")
    paragraphs.append(nxt)
    return paragraphs


# --- the other samplers ------------------------------------------------------------------------------------
def _baseline(s: _Step) -> list[list[str]]:
    r, lim = s.r, s.lim
    k = int(r.info.get("k", len(s.decoded)))
    listed = s.listed(s.decoded) or "none"
    if s.dream_sampler:
        alg = str(s.params.get("alg", "entropy"))
        if alg == "origin":
            rule = "each masked position with the probability its time schedule gives"
            text = [f"**Dream's sampler** (no blocks), a step of its time schedule: it commits {rule}; this forward "
                    f"committed {len(s.decoded)} ({listed})."]
        else:
            text = [f"**Dream's sampler** (no blocks): its time schedule gives this step {k}, taken by its score "
                    f"`{esc(alg)}` among the masked positions: {listed}."]
    else:
        rule = "at random" if lim.remasking == "random" else "the most certain"
        text = [f"**Baseline** (LLaDA's sampler), block {r.block}: each forward commits a fixed number of tokens, "
                f"here {k}, chosen {rule} among the block's masked positions ({listed}), whatever their "
                "certainty."]
        if k == 1 and len(s.decoded) == 1:
            text.append("One token per forward is the slow reference SlowFast is measured against.")
    if not s.decoded:
        if s.block_done("before") == s.block_size:
            text.append(_nothing_decoded(s, s.bs, s.be, "in the block"))
        elif k == 0:
            text.append("The schedule gives this forward no token to commit, so it decodes nothing.")
        else:
            text.append("This forward decodes nothing.")
    text += _fills(s) + _after_full_block(s)
    return [text]


def _threshold(s: _Step) -> list[list[str]]:
    r, lim = s.r, s.lim
    decoded = s.decoded
    if lim.factor:
        rule = (f"Fast-dLLM's factor rule (factor {_g(lim.factor)}): the largest number n of the block's masked "
                "positions for which the n-th highest certainty is at least 1 - factor / (n + 1), at least one")
    else:
        rule = (f"every masked position of the block whose certainty reached {_g(lim.threshold)} (at least one, "
                "the most certain)")
    text = [f"**Threshold** sampler (Fast-dLLM), block {r.block}: commits {rule}.",
            f"This forward decoded {len(decoded)}: {s.listed(decoded) or 'none'}."]
    cand = np.zeros(s.G, dtype=bool)
    cand[s.bs:s.be] = s.before[s.bs:s.be]
    T = lim.threshold
    if not decoded:
        text.append(_nothing_decoded(s, s.bs, s.be, "in the block"))
    elif not lim.factor and T is not None:
        lowest = float(s.conf[decoded].min())
        sure = int((cand & (s.conf >= T)).sum())
        if lowest >= T and sure == len(decoded):
            text.append(f"All of them reached the threshold (the lowest certainty: {_ineq(lowest, '>=', T)}).")
        elif len(decoded) == 1 and lowest < T and sure == 0:
            text.append(f"None reached the threshold, so it committed the single most certain one "
                        f"({_ineq(lowest, '<', T)}).")
    text.append("Unlike SlowFast it has no slow stage and estimates no horizon: its span is simply the current "
                "block" + (f" [{r.span[0]}, {r.span[1]})" if r.span is not None else "")
                + ", whatever the model is sure of.")
    text += _fills(s) + _after_full_block(s)
    return [text]


def _denoise_tokens(s: _Step, positions: list[int]) -> str:
    """Positions with the token the canvas holds there after the step (the accepted sample)."""
    strings = getattr(s.trace, "token_strings", {}) or {}
    canvas = s.r.canvas if s.r.canvas is not None else s.r.argmax
    shown = [f"{p} `{esc(strings.get(str(int(canvas[p])), str(int(canvas[p])))).replace('`', 'ˋ')}`"
             for p in positions[:MAX_LISTED]]
    more = f" and {len(positions) - MAX_LISTED} more" if len(positions) > MAX_LISTED else ""
    return ", ".join(shown) + more


def _denoise(s: _Step) -> list[list[str]]:
    """DiffusionGemma's step: the canvas denoised whole, the entropy bound's acceptance, the
    stopping rule's two tests (from the record: ``info``, ``accepted``, ``renoised``)."""
    r, lim, info = s.r, s.lim, dict(s.r.info or {})
    lo, hi = (r.span if r.span is not None else (s.bs, s.be))
    accepted, renoised = list(r.accepted or []), list(r.renoised or [])
    text = [f"**Entropy bound** sampler (DiffusionGemma), canvas {r.block} [{lo}, {hi}): there is no mask; every "
            "position of the canvas holds a token (uniformly random at first) and the decoder re-predicts all of "
            "them at each step"
            + (f", its logits divided by the temperature {info['temperature']:.3g}" if "temperature" in info else "")
            + "."]
    if lim.entropy_bound is not None:
        text.append(f"It accepted the {_plural(len(accepted), 'lowest-entropy position')} whose entropies sum, "
                    f"less the largest of them, to at most {_g(lim.entropy_bound)}: "
                    f"{_denoise_tokens(s, accepted) or 'none'}; the other {len(renoised)} were renoised with "
                    "uniformly random tokens.")
    mean, k = info.get("mean_entropy"), lim.stop_stability
    if mean is not None and lim.stop_entropy is not None:
        conf = _ineq(mean, "<", lim.stop_entropy)
        stable = ("no stability test (0 steps)" if k == 0 else
                  f"the argmax is the same as in the previous {_plural(int(k), 'step')}" if info.get("stable") else
                  f"the argmax differs from one of the previous {_plural(int(k), 'step')} (or there were fewer)")
        verdict = "so the canvas stops here" if info.get("stop") else "so denoising goes on"
        text.append(f"Stopping rule: mean entropy {conf}; {stable}; {verdict}.")
    if r.decoded:
        why = ("the stopping rule held" if info.get("stop") else
               "the schedule's last step ran" if info.get("remaining") == 0 else "its last step ran")
        written = f"The canvas is finished ({why}): its argmax is written as positions [{lo}, {hi}) of the answer"
        if info.get("padded"):
            text.append(f"{written}; it holds the end of text, so generate stops here and the "
                        f"{_plural(int(info['padded']), 'position')} after it are pad.")
        elif hi >= s.G:
            text.append(f"{written}, the last canvas.")
        else:
            text.append(f"{written}, and the encoder reads it into the KV cache before the next canvas.")
    return [text]


# --- the panel ---------------------------------------------------------------------------------------------------
def _llada2_next(s: _Step) -> str:
    """What the next record did with this block (said only when the trace holds it)."""
    if s.is_last:
        return ""
    nxt = s.all[s.i + 1]
    if int(nxt.block) == int(s.r.block):
        return f"The next forward works on block {s.r.block} again ({'a post step' if nxt.stage == EDIT else 'masks left'})."
    return f"The block is finished: the next forward works on block {nxt.block}."


def _llada2(s: _Step) -> list[list[str]]:
    """LLaDA2.1's step: mask to token above the threshold, token to token above the editing threshold."""
    r, T = s.r, float(s.params.get("m2t_threshold", 0.7))
    E, k = float(s.params.get("edit_threshold", 0.5)), int(s.params.get("min_transfer", 1))
    edited = [int(p) for p in (r.edited or [])]
    text = [f"**LLaDA2** sampler (LLaDA2.1's threshold decoding with editing), block {r.block} [{s.bs}, {s.be}):"]
    if r.stage == UNMASK:
        decoded = s.decoded
        text.append(f"mask to token unmasks every masked position of the block whose certainty is above {_g(T)}, "
                    f"if at least {k} are, else the {_plural(k, 'most certain one')}. This forward unmasked "
                    f"{len(decoded)}: {s.listed(decoded) or 'none'}.")
        if decoded:
            lowest = float(s.conf[decoded].min())
            text.append(f"Its lowest certainty: {_ineq(lowest, '>' if lowest > T else '<=', T)}"
                        + ("." if lowest > T else ", taken as one of the most certain."))
    else:
        post = int((r.info or {}).get("post_step", 0))
        limit = int(s.params.get("max_post_steps", 16))
        text.append(f"the block was full before this forward: post step {post} of at most {limit}, which may "
                    "only edit.")
    if E >= 1:
        text.append("Editing is off (editing threshold 1).")
    elif edited:
        text.append(f"Token to token: {_plural(len(edited), 'decoded position')} of the block took the model's new "
                    f"prediction, certain above {_g(E)}: {s.listed(edited)}.")
    else:
        text.append(f"Token to token: no decoded position of the block was predicted otherwise with a certainty "
                    f"above {_g(E)}, so nothing was edited.")
    nxt = _llada2_next(s)
    return [text + ([nxt] if nxt else [])]


def _body(trace: Any, step: Optional[int]) -> tuple[Optional[_Step], list[list[str]]]:
    s = _Step(trace, step)
    if s.view.empty:
        return None, []
    stage = s.r.stage
    if stage == Stage.SLOW:
        paragraphs = _slow(s)
    elif stage == Stage.FAST:
        paragraphs = _fast(s)
    elif stage == Stage.BASELINE:
        paragraphs = _baseline(s)
    elif stage == Stage.THRESHOLD:
        paragraphs = _threshold(s)
    elif stage == DENOISE:
        paragraphs = _denoise(s)
    elif stage in (UNMASK, EDIT):
        paragraphs = _llada2(s)
    else:
        paragraphs = [[f"Stage `{esc(stage)}`: decoded {len(s.decoded)} positions."]]
    end = _run_end(s)
    if end:
        paragraphs.append(end)
    return s, [p for p in paragraphs if p]


def explain_sentences(trace: Any, step: Optional[int] = None) -> list[str]:
    """The sentences of the explanation of record ``step`` (None = the last), in order,
    without the heading and the fold-out."""
    if trace is None:
        return []
    _, paragraphs = _body(trace, step)
    return [sentence for paragraph in paragraphs for sentence in paragraph]


def explain_step(trace: Any, step: Optional[int] = None) -> str:
    """Markdown: what the decoder did at record ``step`` (None = the last) and why."""
    if trace is None:
        return f"### What you are seeing\n\nRun something, or replay a trace. {INTRO}"
    s, paragraphs = _body(trace, step)
    if s is None:
        return f"### What you are seeing\n\nNo steps yet. {INTRO}"
    r = s.r
    head = (f"### What you are seeing: step {s.view.last} of {s.view.n_total - 1}\n\n"
            f"NFE {r.nfe} so far, {r.tokens_fed} tokens fed to this forward.")
    body = [" ".join(p) for p in paragraphs]
    return "\n\n".join([head, *body, f"<details><summary>What is SlowFast?</summary>\n\n{INTRO}\n\n</details>"])
