"""``eval``'s report: the Markdown (the model card's "Decoding" section) and how a new report
replaces the card's earlier reports of the same tasks."""
from __future__ import annotations

import os
from typing import Optional

from .measures import FAILURE_KINDS, LONG_CHAIN, TaskReport

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
        head = (f"| {label(r)} | {r.n} | {r.gen_length} | {r.metric} | {r.baseline_accuracy:.1%} | "
                f"{r.baseline_nfe:.1f} | ")
        if r.baseline_only:  # SlowFast and the threshold sampler were not run
            lines.append(head + "not run | " * 6 + f"{sp} |")
            continue
        lines.append(head + f"{r.slowfast_accuracy:.1%} | {r.slowfast_nfe:.1f} | {r.slowfast_nfe / r.baseline_nfe:.2f} | "
                     f"{r.early_exit_nfe:.1f} | {r.slowfast_cycles:.2f} | {r.slowfast_parallel_fast:.0%} | {sp} |")
    lines += threshold_lines(reports)
    lines += chain_lines(reports)
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


def threshold_lines(reports: list[TaskReport]) -> list[str]:
    """SlowFast against the threshold sampler, for the reports that ran both (none: no table)."""
    lines: list[str] = []
    if all(r.baseline_only for r in reports):
        return lines
    lines += ["", "SlowFast against Fast-dLLM's threshold sampler at the same threshold (0.9):", "",
              "| task | decode order differs | text differs | SlowFast acc / NFE | threshold acc / NFE |",
              "|---|---|---|---|---|"]
    for r in reports:
        if r.baseline_only:
            continue
        lines.append(f"| {label(r)} | {r.order_differs:.0%} | {r.text_differs:.0%} | "
                     f"{r.slowfast_accuracy:.1%} / {r.slowfast_nfe:.1f} | "
                     f"{r.threshold_accuracy:.1%} / {r.threshold_nfe:.1f} |")
    return lines


def chain_lines(reports: list[TaskReport]) -> list[str]:
    """Each chain report's figures per number of operations, and over its long chains."""
    lines: list[str] = []
    for r in reports:
        if not r.by_ops:
            continue
        sf = not r.baseline_only
        lines += ["", f"`{label(r)}` by number of operations (runs of the same {r.n} prompts):", "",
                  "| operations | n | baseline acc |" + (" SlowFast acc | SlowFast NFE | cycles / run | runs with a "
                                                          "parallel fast step |" if sf else ""),
                  "|---|---|---|" + ("---|---|---|---|" if sf else "")]
        for k, row in [*r.by_ops.items(), (f">= {LONG_CHAIN}", r.long_chains)]:
            if not row or not row.get("n"):
                continue
            lines.append(f"| {k} | {row['n']} | {row['baseline']:.0%} |" + (
                f" {row['slowfast']:.0%} | {row['slowfast_nfe']:.1f} | {row['cycles']:.2f} | {row['parallel']:.0%} |"
                if sf else ""))
    return lines


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


