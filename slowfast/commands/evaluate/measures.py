"""``eval``'s runs of a task: each held-out prompt decoded by the baseline, SlowFast (also with
``stop_when_full``) and the threshold sampler, and what is read off the traces."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ...engine import GenerationSettings, first_end, generate
from ...samplers import Stage
from ...samplers.slowfast import SlowFastInfo
from ...tasks.story import check_story, count_events
from ...trace import Trace
from .probes import count_inference, step_inference

SLIDERS: dict[str, list[Any]] = {  # values inside the app's slider ranges, ends included
    "exploration_steps": [1, 3, 6, 12],
    "horizon_threshold": [0.05, 0.3, 0.6, 0.9],
    "stability_window": [1, 2, 4, 8],
    "std_threshold": [0.0, 1.0, 2.0, 5.0],
    "high_confidence_threshold": [0.6, 0.8, 0.9, 0.99],
}


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties sharing their average rank."""
    order = np.argsort(values, kind="stable")
    r = np.empty(len(values), dtype=np.float64)
    sorted_vals = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        r[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x: np.ndarray, y: np.ndarray) -> Optional[float]:
    """Spearman's rank correlation; None when either side is constant or too short."""
    if len(x) < 3:
        return None
    rx, ry = ranks(np.asarray(x, np.float64)), ranks(np.asarray(y, np.float64))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def cycles(trace: Trace) -> int:
    infos = ((r.block, SlowFastInfo.of(r)) for r in trace.records if r.stage in (Stage.SLOW, Stage.FAST))
    return len({(block, info.cycle if info else None) for block, info in infos})


def has_parallel_fast_step(trace: Trace) -> bool:
    return any(r.stage == Stage.FAST and len(r.decoded) >= 2 for r in trace.records)


@dataclass
class TaskReport:
    task: str
    n: int
    gen_length: int
    metric: str
    block_length: int = 0
    baseline_accuracy: float = 0.0
    baseline_nfe: float = 0.0
    spearman: Optional[float] = None
    slowfast_accuracy: float = 0.0
    slowfast_nfe: float = 0.0
    slowfast_cycles: float = 0.0
    slowfast_parallel_fast: float = 0.0
    early_exit_accuracy: float = 0.0
    early_exit_nfe: float = 0.0
    threshold_accuracy: float = 0.0
    threshold_nfe: float = 0.0
    order_differs: float = 0.0
    text_differs: float = 0.0
    sliders: dict[str, dict[str, float]] = field(default_factory=dict)
    count_inference: dict[str, float] = field(default_factory=dict)  # story: forward, backward, events
    step_inference: dict[str, float] = field(default_factory=dict)  # arithmetic: computed, steps
    failures: dict[str, int] = field(default_factory=dict)  # story: the baseline's wrong runs, by kind
    samples: list[dict[str, Any]] = field(default_factory=list)
    baseline_only: bool = False  # only the baseline was run (the SlowFast and threshold fields are unset)
    # a chain: per number of operations, {"n", "baseline", "slowfast", "slowfast_nfe", "cycles", "parallel"}
    by_ops: dict[str, dict[str, float]] = field(default_factory=dict)
    long_chains: dict[str, float] = field(default_factory=dict)  # the same over chains of >= LONG_CHAIN operations


LONG_CHAIN = 7  # chains of this many operations or more are long enough for SlowFast's fast stage
FAILURE_KINDS = ("count written before its change", "change written before its count", "other")


def story_failure(model, prompt: str, trace: Trace) -> Optional[str]:
    """Why a story run fails its checker: at a count that disagrees with the change before
    it, was the count or the change written first (``FAILURE_KINDS``)? None when it passes."""
    ok, _, reason = check_story(prompt, trace.text)
    if ok:
        return None
    words = trace.text.split()
    bad = int(reason.split()[1]) - 1 if reason.startswith("word ") else -1
    if bad < 1 or words[bad - 1] != "has":
        return FAILURE_KINDS[2]
    ids = [int(t) for t in trace.tokens]
    strings = model.token_strings(ids)
    at = trace.decoded_at()
    for k, _, n in count_events(strings):
        if len(model.decode(ids[:n + 1]).split()) == bad + 1:  # the event whose count is the bad word
            return FAILURE_KINDS[0] if at[n] < at[k] else FAILURE_KINDS[1]
    return FAILURE_KINDS[2]


def settings_for(sampler: str, gen_length: int, block_length: Optional[int] = None, chat: bool = False,
                 **params) -> GenerationSettings:
    return GenerationSettings(sampler=sampler, gen_length=gen_length, block_length=block_length or gen_length,
                              steps=gen_length, chat=chat, params=params)


def runs_of(model, prompt: str, G: int, B: int, chat: bool = False, baseline_only: bool = False
            ) -> dict[str, Trace]:
    """The prompt decoded by the four configurations the report compares (the baseline alone
    with ``baseline_only``); ``chat``: the prompt is the user's turn in the chat template."""
    runs = {"baseline": generate(model, prompt, settings_for("baseline", G, B, chat))}
    if not baseline_only:
        runs["slowfast"] = generate(model, prompt, settings_for("slowfast", G, B, chat))
        runs["early"] = generate(model, prompt, settings_for("slowfast", G, B, chat, stop_when_full=True))
        runs["threshold"] = generate(model, prompt, settings_for("threshold", G, B, chat, threshold=0.9))
    return runs


def chain_rows(rows: list[dict]) -> dict[str, float]:
    """Means over a chain's runs ``rows`` (each: baseline and SlowFast right or wrong, SlowFast's
    forwards, cycles and whether a fast forward decoded >= 2 tokens)."""
    out = {"n": len(rows), "baseline": mean([r["baseline"] for r in rows])}
    if rows and "slowfast" in rows[0]:
        out.update({k: mean([r[k] for r in rows]) for k in ("slowfast", "slowfast_nfe", "cycles", "parallel")})
    return out


def chain_breakdown(rep: TaskReport, rows: list[dict]) -> None:
    """A chain's figures per number of operations, and over the chains of >= ``LONG_CHAIN``."""
    if not rows or rows[0]["ops"] is None:
        return
    for k in sorted({r["ops"] for r in rows}):
        rep.by_ops[str(k)] = chain_rows([r for r in rows if r["ops"] == k])
    rep.long_chains = chain_rows([r for r in rows if r["ops"] >= LONG_CHAIN])


def first_forward_spearman(model, base: Trace) -> Optional[float]:
    """Spearman(position, the first forward's confidence) over the answer's non-EOS positions."""
    end = first_end(base.tokens, model.eos_ids)
    c = base.records[0].confidence[:end].astype(np.float64)
    return spearman(np.arange(end), c)


def slider_nfe(model, task, examples: list, G: int, B: int, progress=None) -> dict[str, dict[str, float]]:
    """Mean SlowFast NFE over ``examples`` for each value of each slider (the rest at defaults)."""
    out: dict[str, dict[str, float]] = {}
    for name, values in SLIDERS.items():
        out[name] = {}
        for v in values:
            runs = [generate(model, ex.prompt, settings_for("slowfast", G, B, **{name: v})) for ex in examples]
            out[name][str(v)] = mean([t.stats.nfe for t in runs])
            if progress:
                progress(f"{task.name} slider {name}={v}")
    return out


def mean(values: list) -> float:
    return float(np.mean(values)) if values else 0.0


def compare_runs(model, runs: dict[str, Trace], seen: dict[str, list]) -> None:
    """What ``seen`` collects of one prompt's runs: the first forward's positional gradient,
    SlowFast's cycles and parallel fast steps, and where it departs from the threshold sampler."""
    rho = first_forward_spearman(model, runs["baseline"])
    if rho is not None:
        seen["correlations"].append(rho)
    if "slowfast" not in runs:
        return
    sf, th = runs["slowfast"], runs["threshold"]
    seen["cycles"].append(cycles(sf))
    seen["parallel"].append(has_parallel_fast_step(sf))
    seen["order"].append([sorted(r.decoded) for r in sf.records if r.decoded]
                         != [sorted(r.decoded) for r in th.records if r.decoded])
    seen["text"].append(sf.text != th.text)


def evaluate_task(model, task, n: int, sliders: bool, slider_n: int, progress=None,
                  block_length: Optional[int] = None, baseline_only: bool = False) -> TaskReport:
    G = task.gen_length
    B = block_length or G
    chat = bool(getattr(task, "chat", False))
    rep = TaskReport(task=task.name, n=n, gen_length=G, metric=task.primary_metric, block_length=B,
                     baseline_only=baseline_only)
    examples = task.examples("heldout", n)
    seen: dict[str, list] = {k: [] for k in ("correlations", "cycles", "parallel", "order", "text")}
    acc: dict[str, list[float]] = {k: [] for k in ("baseline", "slowfast", "early", "threshold")}
    nfe: dict[str, list[int]] = {k: [] for k in acc}
    rows = []
    for i, ex in enumerate(examples):
        runs = runs_of(model, ex.prompt, G, B, chat, baseline_only)
        for k, t in runs.items():
            acc[k].append(float(task.correct(ex, t.text)))
            nfe[k].append(t.stats.nfe)
        compare_runs(model, runs, seen)
        rows.append({"ops": len(ex.meta["ops"]) if "ops" in ex.meta else None, "baseline": acc["baseline"][-1]}
                    | ({} if baseline_only else {"slowfast": acc["slowfast"][-1], "slowfast_nfe": nfe["slowfast"][-1],
                                                 "cycles": seen["cycles"][-1], "parallel": seen["parallel"][-1]}))
        base, sf = runs["baseline"], runs.get("slowfast")
        if task.name == "story":
            kind = story_failure(model, ex.prompt, base)
            if kind is not None:
                rep.failures[kind] = rep.failures.get(kind, 0) + 1
        if i < 3:
            rep.samples.append({"prompt": ex.prompt, "baseline": base.text} | ({} if sf is None else {
                "slowfast": sf.text, "slowfast_nfe": sf.stats.nfe, "cycles": cycles(sf)}))
        if progress:
            progress(f"{task.name} {i + 1}/{n}")
    chain_breakdown(rep, rows)
    rep.baseline_accuracy, rep.baseline_nfe = mean(acc["baseline"]), mean(nfe["baseline"])
    rep.slowfast_accuracy, rep.slowfast_nfe = mean(acc["slowfast"]), mean(nfe["slowfast"])
    rep.early_exit_accuracy, rep.early_exit_nfe = mean(acc["early"]), mean(nfe["early"])
    rep.threshold_accuracy, rep.threshold_nfe = mean(acc["threshold"]), mean(nfe["threshold"])
    rep.spearman = mean(seen["correlations"]) if seen["correlations"] else None
    rep.slowfast_cycles, rep.slowfast_parallel_fast = mean(seen["cycles"]), mean(seen["parallel"])
    rep.order_differs, rep.text_differs = mean(seen["order"]), mean(seen["text"])
    if task.name == "story" and block_length is None:
        rep.count_inference = count_inference(model, task, n)
    if task.name == "arithmetic" and block_length is None:
        rep.step_inference = step_inference(model, task, n)
    if sliders:
        rep.sliders = slider_nfe(model, task, examples[:slider_n], G, B, progress)
    return rep
