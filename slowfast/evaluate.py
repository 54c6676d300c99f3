"""``python -m slowfast eval``: does a model decode the way SlowFast is meant to be seen?

On the fixed held-out split of each task, greedy, through the real engine:

1. accuracy of the one-token-per-forward baseline (steps = gen length, one block);
2. positional certainty: Spearman correlation between position and the first forward's
   confidence over the answer's non-EOS positions, averaged over prompts;
3. SlowFast's stages with the reference-code defaults: cycles per run, share of runs with a
   fast-stage forward that decodes at least two tokens;
4. speed at equal accuracy: SlowFast's NFE (every forward the published code runs) against
   the baseline's, and its accuracy (also with ``stop_when_full``);
5. whether the sliders matter: mean NFE on a task for a few values of each SlowFast
   parameter (the rest at their defaults);
6. how often SlowFast's decode order differs from the threshold sampler's at the same
   high-confidence threshold, and both samplers' accuracy and NFE;
7. on the story, how well one forward infers a hidden count on the true story: a later count
   from the change before it ("forward"), and a change from the count after it ("backward"),
   which a decoder needs whenever it wrote the later count first;
8. on the chain, how well one forward computes a worked step on the true chain: its result
   hidden (with the result's next use, so it cannot be copied), the numbers it is computed
   from shown.

It prints a Markdown report (the model card's "Decoding" section) and can write JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .engine import GenerationSettings, first_end, generate
from .samplers import Stage
from .samplers.slowfast import SlowFastInfo
from .trace import Trace

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


def true_responses(model, task, n: int, find):
    """(prompt ids, true response ids, its events) of each of the first ``n`` held-out
    examples in which ``find`` (of the response's token strings) finds any events."""
    for ex in task.examples("heldout", n):
        prompt = model.encode_prompt(ex.prompt, chat=False)
        response = list(model.tokenizer(ex.target)["input_ids"])[:task.gen_length]
        found = find(model.token_strings(response))
        if found:
            yield prompt, response, found


def hidden(model, prompt: list[int], response: list[int], hide) -> list[int]:
    """The prompt and the response with the positions ``hide`` masked."""
    x = list(response)
    for h in hide:
        x[h] = model.mask_id
    return prompt + x


def count_inference(model, task, n: int) -> dict[str, float]:
    """One forward per hidden count on the true continuations of ``n`` held-out stories:
    "forward" hides the new count (the change and the count before it visible), "backward"
    hides the change and its noun (the new count visible). Share of argmax hits of each."""
    import torch

    from .tasks.story import count_events

    hits = {"forward": 0, "backward": 0}
    events = 0
    for prompt, response, found in true_responses(model, task, n, count_events):
        rows, targets = [], []
        for k, noun, new in found:
            for kind, hide, at in (("forward", (new,), new), ("backward", (k, noun), k)):
                rows.append(hidden(model, prompt, response, hide))
                targets.append((kind, len(prompt) + at, response[at]))
        logits = model.forward(torch.tensor(rows, device=model.device))
        for row, (kind, at, want) in enumerate(targets):
            hits[kind] += int(logits[row, at].argmax()) == want
        events += len(found)
    return {"forward": hits["forward"] / max(events, 1), "backward": hits["backward"] / max(events, 1),
            "events": events}


def step_inference(model, task, n: int) -> dict[str, float]:
    """One forward per worked step on the true chains of ``n`` held-out problems: the step's
    result and its next use hidden (``tasks.arithmetic.step_events``), everything else shown.
    Share of steps whose every result token is the argmax ("computed")."""
    import torch

    from .tasks.arithmetic import step_events

    hits = steps = 0
    for prompt, response, found in true_responses(model, task, n, step_events):
        rows = [hidden(model, prompt, response, hide) for hide, _ in found]
        logits = model.forward(torch.tensor(rows, device=model.device))
        for row, (hide, _) in enumerate(found):
            result = hide[:len(hide) // 2]  # the result's own digits (its next use has as many)
            hits += all(int(logits[row, len(prompt) + h].argmax()) == response[h] for h in result)
        steps += len(found)
    return {"computed": hits / max(steps, 1), "steps": steps}


FAILURE_KINDS = ("count written before its change", "change written before its count", "other")


def story_failure(model, prompt: str, trace: Trace) -> Optional[str]:
    """Why a story run fails its checker: at a count that disagrees with the change before
    it, was the count or the change written first (``FAILURE_KINDS``)? None when it passes."""
    from .tasks.story import check_story, count_events

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


def settings_for(sampler: str, gen_length: int, block_length: Optional[int] = None, **params) -> GenerationSettings:
    return GenerationSettings(sampler=sampler, gen_length=gen_length, block_length=block_length or gen_length,
                              steps=gen_length, chat=False, params=params)


def evaluate_task(model, task, n: int, sliders: bool, slider_n: int, progress=None,
                  block_length: Optional[int] = None) -> TaskReport:
    G = task.gen_length
    B = block_length or G
    rep = TaskReport(task=task.name, n=n, gen_length=G, metric=task.primary_metric, block_length=B)
    examples = task.examples("heldout", n)
    correlations = []
    acc = {k: [] for k in ("baseline", "slowfast", "early", "threshold")}
    nfe = {k: [] for k in acc}
    cyc, par, order, text = [], [], [], []
    for i, ex in enumerate(examples):
        runs = {
            "baseline": generate(model, ex.prompt, settings_for("baseline", G, B)),
            "slowfast": generate(model, ex.prompt, settings_for("slowfast", G, B)),
            "early": generate(model, ex.prompt, settings_for("slowfast", G, B, stop_when_full=True)),
            "threshold": generate(model, ex.prompt, settings_for("threshold", G, B, threshold=0.9)),
        }
        for k, t in runs.items():
            acc[k].append(float(task.score(ex, t.text)[task.primary_metric]))
            nfe[k].append(t.stats.nfe)
        base, sf, th = runs["baseline"], runs["slowfast"], runs["threshold"]
        end = first_end(base.tokens, model.eos_ids)  # the answer's non-EOS positions
        c = base.records[0].confidence[:end].astype(np.float64)
        rho = spearman(np.arange(end), c)
        if rho is not None:
            correlations.append(rho)
        cyc.append(cycles(sf))
        par.append(has_parallel_fast_step(sf))
        order.append([sorted(r.decoded) for r in sf.records if r.decoded]
                     != [sorted(r.decoded) for r in th.records if r.decoded])
        text.append(sf.text != th.text)
        if task.name == "story":
            kind = story_failure(model, ex.prompt, base)
            if kind is not None:
                rep.failures[kind] = rep.failures.get(kind, 0) + 1
        if i < 3:
            rep.samples.append({"prompt": ex.prompt, "baseline": base.text, "slowfast": sf.text,
                                "slowfast_nfe": sf.stats.nfe, "cycles": cycles(sf)})
        if progress:
            progress(f"{task.name} {i + 1}/{n}")
    mean = lambda v: float(np.mean(v)) if v else 0.0  # noqa: E731
    rep.baseline_accuracy, rep.baseline_nfe = mean(acc["baseline"]), mean(nfe["baseline"])
    rep.slowfast_accuracy, rep.slowfast_nfe = mean(acc["slowfast"]), mean(nfe["slowfast"])
    rep.early_exit_accuracy, rep.early_exit_nfe = mean(acc["early"]), mean(nfe["early"])
    rep.threshold_accuracy, rep.threshold_nfe = mean(acc["threshold"]), mean(nfe["threshold"])
    rep.spearman = mean(correlations) if correlations else None
    rep.slowfast_cycles, rep.slowfast_parallel_fast = mean(cyc), mean(par)
    rep.order_differs, rep.text_differs = mean(order), mean(text)
    if task.name == "story" and block_length is None:
        rep.count_inference = count_inference(model, task, n)
    if task.name == "arithmetic" and block_length is None:
        rep.step_inference = step_inference(model, task, n)
    if sliders:
        for name, values in SLIDERS.items():
            rep.sliders[name] = {}
            for v in values:
                runs = [generate(model, ex.prompt, settings_for("slowfast", G, B, **{name: v}))
                        for ex in examples[:slider_n]]
                rep.sliders[name][str(v)] = mean([t.stats.nfe for t in runs])
                if progress:
                    progress(f"{task.name} slider {name}={v}")
    return rep


def job_label(task: str, block_length: Optional[int], gen_length: int) -> str:
    """How a task run (in blocks of ``block_length``; None: one block) is named in the report."""
    return task if block_length in (None, gen_length) else f"{task} (blocks of {block_length})"


def label(r: TaskReport) -> str:
    return job_label(r.task, r.block_length, r.gen_length)


def duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def markdown(reports: list[TaskReport], command: str, seconds: float, slider_n: int, threads: int = 1) -> str:
    lines = [
        "## Decoding (held out, greedy, through the engine)",
        "",
        f"`{command}` ({duration(seconds)} on a {os.cpu_count()}-core CPU, "
        f"{'one thread' if threads == 1 else f'{threads} threads'}). "
        "One block per run at the task's generation length unless the block column says otherwise. "
        "Baseline: one token per forward (steps = generation length). "
        "SlowFast: the reference-code defaults (6 exploration steps, horizon 0.3, window 2, std 1.0, "
        "high confidence 0.9), counting every forward the published code runs; \"early exit\" adds our "
        "`stop_when_full`. Threshold: Fast-dLLM at 0.9.",
        "",
        "| task | n | gen | metric | baseline acc | baseline NFE | SlowFast acc | SlowFast NFE | NFE ratio | "
        "early exit NFE | cycles / run | runs with a parallel fast step | Spearman(pos, conf) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        sp = "n/a" if r.spearman is None else f"{r.spearman:+.2f}"
        lines.append(
            f"| {label(r)} | {r.n} | {r.gen_length} | {r.metric} | {r.baseline_accuracy:.1%} | {r.baseline_nfe:.1f} | "
            f"{r.slowfast_accuracy:.1%} | {r.slowfast_nfe:.1f} | {r.slowfast_nfe / r.baseline_nfe:.2f} | "
            f"{r.early_exit_nfe:.1f} | {r.slowfast_cycles:.2f} | {r.slowfast_parallel_fast:.0%} | {sp} |")
    lines += ["", "SlowFast against Fast-dLLM's threshold sampler at the same threshold (0.9):", "",
              "| task | decode order differs | text differs | SlowFast acc / NFE | threshold acc / NFE |",
              "|---|---|---|---|---|"]
    for r in reports:
        lines.append(f"| {label(r)} | {r.order_differs:.0%} | {r.text_differs:.0%} | "
                     f"{r.slowfast_accuracy:.1%} / {r.slowfast_nfe:.1f} | "
                     f"{r.threshold_accuracy:.1%} / {r.threshold_nfe:.1f} |")
    for r in reports:
        if r.count_inference:
            ci = r.count_inference
            lines += ["", f"Count inference on the true `{label(r)}` continuations (one forward, "
                      f"{ci['events']} count changes in the {r.n} held-out stories): a hidden new count from the "
                      f"change before it {ci['forward']:.1%}; a hidden change (and its noun) from the new count "
                      f"after it {ci['backward']:.1%}. A decoder that writes a later count before the change "
                      "that leads to it needs the second."]
        if r.step_inference:
            si = r.step_inference
            lines += ["", f"Step computation on the true `{label(r)}` chains (one forward, {si['steps']} worked "
                      f"steps in the {r.n} held-out problems): a step's result, hidden with its next use so it "
                      f"cannot be copied, from the numbers it is computed from {si['computed']:.1%}. A chain of "
                      "five steps is right only when each of them is."]
        if r.failures:
            wrong = sum(r.failures.values())
            lines += ["", f"The baseline's {wrong} wrong `{label(r)}` runs, by where the checker stops: "
                      + "; ".join(f"{kind}: {r.failures.get(kind, 0)}" for kind in FAILURE_KINDS) + "."]
    for r in reports:
        if not r.sliders:
            continue
        lines += ["", f"Sliders on `{label(r)}` (mean SlowFast NFE over the first {min(slider_n, r.n)} "
                  "held-out prompts; the other parameters at their defaults):", "",
                  "| parameter | values -> mean NFE | largest / smallest |", "|---|---|---|"]
        for name, by_value in r.sliders.items():
            vals = list(by_value.values())
            cells = ", ".join(f"{v}: {x:.1f}" for v, x in by_value.items())
            lines.append(f"| {name} | {cells} | {max(vals) / min(vals):.2f} |")
    return "\n".join(lines) + "\n"


DECODING_HEADING = "## Decoding (held out, greedy, through the engine)"


def report_chunks(decoding: str) -> list[tuple[Optional[set[str]], str]]:
    """A card's decoding text cut at its ``##`` and ``###`` headings: (the task labels of the
    report's first table, the text) for each report ``markdown`` wrote, (None, text) for the rest."""
    chunks: list[tuple[Optional[set[str]], list[str]]] = []
    for line in decoding.strip().splitlines():
        if line.startswith(DECODING_HEADING):
            chunks.append((set(), [line]))
        elif line.startswith(("## ", "### ")) or not chunks:
            chunks.append((None, [line]))
        else:
            chunks[-1][1].append(line)
    out = []
    for labels, lines in chunks:
        if labels is not None:
            table = next((i for i, line in enumerate(lines) if line.startswith("| task |")), len(lines))
            for line in lines[table + 2:]:
                if not line.startswith("|"):
                    break
                labels.add(line.split("|")[1].strip())
        out.append((labels, "\n".join(lines).strip()))
    return out


def merge_decoding(old: str, new: str, labels: set[str]) -> str:
    """The card's decoding text with ``new`` (a report of the tasks ``labels``) in place of the
    earlier reports of those tasks; reports of other tasks and the text around them are kept.
    ValueError when an earlier report covers some of ``labels`` and other tasks too (it cannot
    be replaced in part): checked before the run with ``new`` empty."""
    out, placed, last_report = [], False, -1
    for tasks, text in report_chunks(old or ""):
        if tasks and tasks <= labels:
            if not placed:
                out.append(new.strip())
                placed = True
            last_report = len(out) - 1
            continue
        if tasks and tasks & labels:
            made_by = text.split("`")[1] if text.count("`") >= 2 else "an earlier eval"
            raise ValueError(f"--card: the card's report from `{made_by}` covers {', '.join(sorted(tasks))}, not "
                             f"only this run's {', '.join(sorted(tasks & labels))}; allowed: a run of all of "
                             "its tasks (it is replaced) or of none of them (it is kept)")
        out.append(text)
        if tasks is not None:
            last_report = len(out) - 1
    if not placed:
        out.insert(last_report + 1, new.strip())
    return "\n\n".join(t for t in out if t) + "\n"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    from .tasks import TASKS

    p = argparse.ArgumentParser(prog="python -m slowfast eval", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from: {', '.join(TASKS)}")
    p.add_argument("--n", type=int, default=100, help="held-out prompts per task")
    p.add_argument("--slider-task", default=None,
                   help="task the slider sweep runs on, one of --tasks ('' = none; default: story when it is run)")
    p.add_argument("--slider-n", type=int, default=30, help="held-out prompts per slider value")
    p.add_argument("--also-blocks", action="append", default=[], metavar="TASK=B",
                   help="also evaluate TASK in semi-autoregressive blocks of B (e.g. arithmetic=32)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--card", action="store_true",
                   help="write the report into the model's card (its training_info.json and README.md): the card's "
                        "earlier reports of the same tasks are replaced, those of other tasks kept (a report that "
                        "covers this run's tasks and others too is refused before the run)")
    return p.parse_args(argv)


def jobs_of(args: argparse.Namespace) -> list[tuple[str, Optional[int]]]:
    """(task, block length or None) per evaluation the flags ask for; ValueError on bad flags."""
    from .tasks import TASKS

    from .bench import at_least

    for flag in ("n", "slider_n", "threads"):
        at_least(getattr(args, flag), f"--{flag.replace('_', '-')}")
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ValueError(f"--tasks: {args.tasks!r} is not allowed; allowed: a comma-separated list of "
                         f"{', '.join(TASKS)}")
    if args.slider_task is None:
        args.slider_task = "story" if "story" in names else ""
    elif args.slider_task and args.slider_task not in names:
        raise ValueError(f"--slider-task: {args.slider_task!r} is not allowed; allowed: one of --tasks "
                         f"({', '.join(names)}) or '' (none)")
    jobs: list[tuple[str, Optional[int]]] = [(name, None) for name in names]
    for spec in args.also_blocks:
        name, _, block = spec.partition("=")
        if name not in TASKS or not block.isdigit() or int(block) < 1 or TASKS[name].gen_length % int(block):
            raise ValueError(f"--also-blocks: {spec!r} is not allowed; use TASK=B with TASK one of "
                             f"{', '.join(TASKS)} and B >= 1 dividing the task's generation length")
        jobs.append((name, int(block)))
    return jobs


def main(argv: Optional[list[str]] = None) -> int:
    from .models.loading import ModelLoadError

    args = parse_args(argv)
    try:
        return run(args, argv)
    except (ValueError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, argv: Optional[list[str]]) -> int:
    import torch

    from .cli import check_output_path
    from .models.loading import load_model
    from .tasks import TASKS

    jobs = jobs_of(args)
    if args.json is not None:
        check_output_path(str(args.json), "--json")  # before the run, so a finished run is never lost
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu", dtype="float32")
    labels = {job_label(name, block, TASKS[name].gen_length) for name, block in jobs}
    if args.card:
        info_path = Path(model.folder or "") / "training_info.json"
        if model.folder is None or not info_path.is_file():
            raise ValueError(f"--card: {args.model} has no training_info.json; allowed: a model exported by "
                             "python -m slowfast train (e.g. --model embedded)")
        check_output_path(str(info_path), "--card")
        merge_decoding(json.loads(info_path.read_text()).get("decoding", ""), "", labels)
    t0 = time.time()
    reports = []
    progress = lambda m: print(f"\r{m:60s}", end="", file=sys.stderr, flush=True)  # noqa: E731
    for name, block in jobs:
        reports.append(evaluate_task(model, TASKS[name], args.n, block is None and name == args.slider_task,
                                     args.slider_n, progress, block))
    print(file=sys.stderr)
    command = "python -m slowfast eval " + shlex.join(sys.argv[1:] if argv is None else argv)  # rerunnable as printed
    md = markdown(reports, command.strip(), time.time() - t0, args.slider_n, args.threads)
    print(md)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in reports], indent=2) + "\n")
    if args.card:
        info = json.loads(info_path.read_text())
        info["decoding"] = merge_decoding(info.get("decoding", ""), md, labels)
        info_path.write_text(json.dumps(info, indent=2) + "\n")
        from .train import model_card

        (info_path.parent / "README.md").write_text(model_card(info) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
