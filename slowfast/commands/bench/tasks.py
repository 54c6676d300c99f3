"""``bench tasks``: baseline, SlowFast and threshold configurations over a task's held-out prompts
(or a JSONL file): accuracy, NFE, tokens fed, time and speedups against one token per forward;
runs under ``torchrun`` (``slowfast/distributed.py``)."""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from typing import Any, Optional

import torch

from ...cache import CACHE_PRESETS
from ...distributed import Dist, setup
from ...engine import GenerationSettings
from ...models.loading import load_model
from ...problems import ProblemSet, problem_set, run_problem
from ...tasks import TASKS
from ...trace import Summary, tokens_per_second
from ..common import ONE_BLOCK, at_least, check_output_path, command_line, machine, machine_line, progress_bar

BASE = "baseline"  # the one-token-per-forward baseline: every speedup is against it
CONFIG_IDS = ("baseline", "baseline/2", "baseline/4", "baseline/8", "slowfast", "slowfast-early", "slowfast-paper",
              "slowfast+cache", "threshold-0.7", "threshold-0.8", "threshold-0.9", "threshold-0.9+cache")
KEPT = "nothing was written (--json and --md are written when every task is done)"


def task_configs(gen_length: int, block_length: int, *, chat: bool = False, seed: int = 0,
                 thresholds: tuple[float, ...] = (0.7, 0.8, 0.9), cache_preset: str = "slowfast-headline",
                 only: Optional[list[str]] = None, cache: bool = True) -> list[tuple[str, str, Any]]:
    """``(id, label, GenerationSettings)`` for every configuration ``bench tasks`` compares.

    Baseline at one token per forward (steps = gen length; always included, as the reference)
    and at gen/2, gen/4, gen/8 steps (rounded down to a multiple of the blocks, at least one
    per block); SlowFast with the reference defaults, with ``stop_when_full`` (the early exit),
    the paper variant, and with dLLM-Cache at ``cache_preset``; the threshold sampler at each
    threshold, and at the highest with the cache. ``cache=False`` leaves the cached ones out
    (models without our transformer's layers)."""
    if cache_preset not in CACHE_PRESETS:
        raise ValueError(f"--cache-preset: {cache_preset!r} is not allowed; allowed: "
                         f"{', '.join(sorted(CACHE_PRESETS))}")
    cache_params = dict(CACHE_PRESETS[cache_preset])
    nb = gen_length // block_length if block_length and gen_length % block_length == 0 else 1

    def settings(sampler: str, steps: int = gen_length, **kw) -> Any:
        return GenerationSettings(sampler=sampler, gen_length=gen_length, block_length=block_length, steps=steps,
                                  chat=chat, seed=seed, **kw)

    def steps_for(div: int) -> int:
        return max(nb, (gen_length // div) // nb * nb)

    out: list[tuple[str, str, Any]] = [(BASE, "baseline, 1 token per forward", settings("baseline"))]
    for div in (2, 4, 8):
        out.append((f"baseline/{div}", f"baseline, {steps_for(div)} steps (gen/{div})",
                    settings("baseline", steps_for(div))))
    out += [
        ("slowfast", "SlowFast (reference defaults)", settings("slowfast")),
        ("slowfast-early", "SlowFast + stop_when_full", settings("slowfast", params={"stop_when_full": True})),
        ("slowfast-paper", "SlowFast (paper variant)", settings("slowfast", params={"variant": "paper"})),
        ("slowfast+cache", f"SlowFast + cache ({cache_preset})", settings("slowfast", cache=dict(cache_params))),
    ]
    for th in thresholds:
        out.append((f"threshold-{th:g}", f"threshold {th:g}", settings("threshold", params={"threshold": th})))
    if thresholds:
        th = max(thresholds)
        out.append((f"threshold-{th:g}+cache", f"threshold {th:g} + cache ({cache_preset})",
                    settings("threshold", params={"threshold": th}, cache=dict(cache_params))))
    return checked(out, only, cache)


def checked(out: list[tuple[str, str, Any]], only: Optional[list[str]], cache: bool) -> list[tuple[str, str, Any]]:
    """The configurations ``only`` names (and the baseline), without the cached ones unless
    ``cache``; each one's settings checked before any decoding."""
    if only:
        known = [c[0] for c in out]
        unknown = [c for c in only if c not in known]
        if unknown:
            raise ValueError(f"--configs: {', '.join(unknown)} not known; allowed: {', '.join(known)}")
        out = [c for c in out if c[0] == BASE or c[0] in only]
    if not cache:
        out = [c for c in out if c[2].cache is None]
    for _, _, s in out:
        s.policy()  # bad settings fail here, before any decoding
    return out


def bench_task(model, problems: ProblemSet, configs: list[tuple[str, str, Any]], dist: Optional[Dist] = None,
               warmup: bool = True, progress: bool = True) -> dict[str, Any]:
    """Every configuration on every prompt of ``problems``: configurations interleaved per prompt
    (their order rotated from prompt to prompt), after one untimed warm-up run of each.

    Under ``torchrun`` each rank decodes its slice of the prompts and the rows are gathered
    on every rank. Returns ``{"task", "count", "gen_length", "block_length", "metric",
    "configs": [summary per configuration], "problems": [row per prompt]}``."""
    dist = dist or Dist()
    mine = dist.shard(problems.problems)
    if warmup and mine:
        for _, _, s in configs:
            run_problem(model, problems, mine[0], s)
    rows = []
    bar = progress_bar(len(mine) * len(configs), f"{problems.name}", progress and dist.is_main)
    try:
        for p in mine:
            k = p.index % len(configs)
            row: dict[str, Any] = {"index": p.index, "prompt": p.prompt, "answer": p.answer, "runs": {}}
            for cid, _, s in configs[k:] + configs[:k]:
                r = run_problem(model, problems, p, s)
                r.pop("index")
                row["runs"][cid] = r
                bar.update()
            row["runs"] = {cid: row["runs"][cid] for cid, _, _ in configs}  # back in the configurations' order
            rows.append(row)
    finally:
        bar.close()
    rows = dist.gather_rows(rows)
    block = configs[0][2].block_length
    return {"task": problems.name, "source": problems.source, "count": len(rows), "gen_length": problems.gen_length,
            "block_length": block, "metric": problems.metric, "configs": summarize_configs(configs, rows),
            "problems": rows}


def totals(runs: list[dict[str, Any]]) -> Summary:
    """The runs' totals (NFE, tokens fed, seconds) as one Summary."""
    return Summary(nfe=sum(r["nfe"] for r in runs), tokens_fed=sum(r["tokens_fed"] for r in runs),
                   seconds=sum(r["seconds"] for r in runs))


def known(x: float) -> float:
    """A speedup, 0.0 where there is nothing to compare (``Summary.speedups`` says NaN)."""
    return 0.0 if math.isnan(x) else x


def summarize_configs(configs: list[tuple[str, str, Any]], rows: list[dict]) -> list[dict[str, Any]]:
    """Per configuration: accuracy, means of NFE / forwards / tokens fed, total seconds, tokens/s
    (generated positions over seconds), speedups against the one-token-per-forward baseline
    (``Summary.speedups``) by NFE and by tokens fed (of the totals) and by time (the median of
    the per-prompt speedups)."""
    out = []
    n = len(rows)
    mean = lambda total: total / n if n else 0.0  # noqa: E731
    base_runs = [row["runs"][BASE] for row in rows]
    for cid, label_, s in configs:
        runs = [row["runs"][cid] for row in rows]
        x = totals(runs).speedups(totals(base_runs))
        per_prompt = [totals([r]).speedups(totals([b]))["time"] for b, r in zip(base_runs, runs)]
        per_prompt = [t for t in per_prompt if not math.isnan(t)]
        secs = sum(r["seconds"] for r in runs)
        out.append({
            "id": cid, "label": label_, "settings": s.to_dict(s.policy()), "n": n,
            "accuracy": mean(sum(r["score"] for r in runs)), "nfe": mean(sum(r["nfe"] for r in runs)),
            "forwards": mean(sum(r["forwards"] for r in runs)), "tokens_fed": mean(sum(r["tokens_fed"] for r in runs)),
            "seconds": secs, "seconds_per_prompt": mean(secs),
            "tokens_per_second": tokens_per_second(s.gen_length * n, secs),
            "speedup_nfe": known(x["nfe"]) if n else 0.0, "speedup_tokens_fed": known(x["tokens_fed"]) if n else 0.0,
            "speedup_time": statistics.median(per_prompt) if per_prompt else 0.0,
            "stalled": sum(bool(r["stalled"]) for r in runs),
        })
    return out


TABLE_COLUMNS = ("config", "acc", "NFE", "forwards", "tokens fed", "s/prompt", "tok/s", "x NFE", "x fed", "x time")


def task_header(result: dict[str, Any]) -> str:
    where = "held-out prompts" if result["source"] == "task" else "prompts from the JSONL file"
    return (f"{result['task']}: {result['count']} {where} | gen {result['gen_length']}, block "
            f"{result['block_length']} | accuracy = {result['metric']}")


def task_table(result: dict[str, Any]) -> str:
    lines = [f"{'config':42s} {'acc':>6s} {'NFE':>7s} {'forwards':>8s} {'tokens fed':>10s} {'s/prompt':>8s} "
             f"{'tok/s':>8s} {'x NFE':>6s} {'x fed':>6s} {'x time':>6s}"]
    for c in result["configs"]:
        stalled = f"  ({c['stalled']} stalled)" if c["stalled"] else ""
        lines.append(f"{c['label'][:42]:42s} {c['accuracy']:6.1%} {c['nfe']:7.1f} {c['forwards']:8.1f} "
                     f"{c['tokens_fed']:10.0f} {c['seconds_per_prompt']:8.3f} {c['tokens_per_second']:8.1f} "
                     f"{c['speedup_nfe']:6.2f} {c['speedup_tokens_fed']:6.2f} {c['speedup_time']:6.2f}{stalled}")
    return "\n".join(lines)


def task_markdown(results: list[dict[str, Any]], m: dict[str, Any], command: str, model_label: str) -> str:
    lines = ["## Samplers over task sets", "",
             f"`{command}`", "",
             f"Model: {model_label}. Machine: {machine_line(m)}.", "",
             "Greedy, one prompt at a time, through the engine. Configurations run interleaved per prompt "
             "after one warm-up run each. Speedups are against the baseline at one token per forward: by NFE and "
             "by tokens fed, ratios of totals (exact); by time, the median of per-prompt paired time ratios "
             "(wall time on this machine)."]
    for r in results:
        lines += ["", f"### {task_header(r)}", "",
                  "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
        for c in r["configs"]:
            stalled = f" ({c['stalled']} stalled)" if c["stalled"] else ""
            lines.append(f"| {c['label']}{stalled} | {c['accuracy']:.1%} | {c['nfe']:.1f} | {c['forwards']:.1f} | "
                         f"{c['tokens_fed']:.0f} | {c['seconds_per_prompt']:.3f} | {c['tokens_per_second']:.1f} | "
                         f"{c['speedup_nfe']:.2f} | {c['speedup_tokens_fed']:.2f} | {c['speedup_time']:.2f} |")
    return "\n".join(lines) + "\n"


def float_list(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{flag}: {text!r} is not allowed; use comma-separated numbers") from None


def problem_sets(args: argparse.Namespace) -> list[ProblemSet]:
    """The prompt sets the flags ask for: the tasks' held-out prompts or the JSONL file."""
    if args.task and args.jsonl:
        raise ValueError("--task and --jsonl: give one of them")
    if args.jsonl:
        try:
            return [problem_set(count=args.count, jsonl=args.jsonl, gen_length=args.gen_length,
                                chat=not args.no_chat)]
        except UnicodeDecodeError as exc:
            raise ValueError(f"--jsonl: {args.jsonl} is not allowed; it is not UTF-8 text (byte {exc.start}); "
                             "allowed: a UTF-8 file of JSON lines") from None
    names = [t.strip() for t in (args.task or ",".join(TASKS)).split(",") if t.strip()]
    return [problem_set(name, args.count, gen_length=args.gen_length) for name in names]


def plans_of(args: argparse.Namespace) -> list[tuple[ProblemSet, list[tuple[str, str, Any]]]]:
    """(prompt set, configurations) per task, every flag and setting checked before a model is loaded."""
    for path, flag in ((args.json, "--json"), (args.md, "--md")):
        if path is not None:
            check_output_path(path, flag)
    at_least(args.threads, "--threads")
    at_least(args.gen_length, "--gen-length", unset=" (leave it out for the task's own)")
    at_least(args.block_length, "--block-length", unset=ONE_BLOCK)
    only = [c.strip() for c in args.configs.split(",") if c.strip()] if args.configs else None
    thresholds = float_list(args.thresholds, "--thresholds")
    return [(ps, task_configs(ps.gen_length, args.block_length or ps.gen_length, chat=ps.chat, seed=args.seed,
                              thresholds=thresholds, cache_preset=args.cache_preset, only=only))
            for ps in problem_sets(args)]


def write_reports(args: argparse.Namespace, results: list[dict[str, Any]], m: dict[str, Any], label_: str) -> None:
    print("\nx NFE, x fed: the baseline's totals over this configuration's; x time: median of per-prompt "
          "time ratios against the baseline at one token per forward")
    command = command_line(args, "python -m slowfast bench tasks")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"command": command.strip(), "model": args.model, "machine": m, "tasks": results}, f, indent=1)
            f.write("\n")
        print(f"JSON written to {args.json}")
    if args.md:
        with open(args.md, "w", encoding="utf-8") as f:
            f.write(task_markdown(results, m, command.strip(), label_))
        print(f"Markdown written to {args.md}")
    sys.stdout.flush()


def run_plans(args: argparse.Namespace, plans: list, dist: Dist) -> None:
    device = dist.device(args.device)
    model = load_model(args.model, device=device, dtype=args.dtype)
    m = machine(device, args.threads, dist.world)
    params = sum(p.numel() for p in model.net.parameters())
    label_ = f"{args.model} ({params / 1e6:.1f}M params, {str(model.dtype).replace('torch.', '')})"
    if dist.is_main:
        print(f"model: {label_}")
        print(f"machine: {machine_line(m)}")
    results = []
    for ps, configs in plans:
        if not model.supports_cache:
            configs = [c for c in configs if c[2].cache is None]
        r = bench_task(model, ps, configs, dist)
        results.append(r)
        if dist.is_main:
            print()
            print(task_header(r))
            print(task_table(r))
    if dist.is_main:
        write_reports(args, results, m, label_)


def cmd_tasks(args: argparse.Namespace) -> int:
    plans = plans_of(args)
    torch.set_num_threads(args.threads)
    dist = setup(args.device)
    try:
        run_plans(args, plans, dist)
    finally:
        dist.close()
    return 0


def add_parser(bs: argparse._SubParsersAction) -> None:
    t = bs.add_parser("tasks", help="configurations over a task's held-out set: accuracy, NFE, tokens fed, time",
                      description="Baseline (1 token per forward, gen/2, gen/4, gen/8 steps), SlowFast (reference, "
                                  "stop_when_full, paper variant, + cache), threshold (several, + cache) over a "
                                  "task's held-out prompts or a JSONL file. Runs under torchrun too (one slice of "
                                  "the prompts per rank).")
    t.add_argument("--model", default="embedded")
    t.add_argument("--task", default=None, help="comma-separated embedded-model tasks (default: all of them)")
    t.add_argument("--jsonl", default=None, metavar="FILE",
                   help='{"prompt", "answer"} per line, scored by exact match of the text cut at end-of-text')
    t.add_argument("--count", type=int, default=20, help="prompts per task (the first held-out ones)")
    t.add_argument("--gen-length", type=int, default=None, help="default: the task's (JSONL: 96)")
    t.add_argument("--block-length", type=int, default=None, help="default: the generation length (one block)")
    t.add_argument("--configs", default=None, help=f"comma-separated subset of: {', '.join(CONFIG_IDS)} "
                                                   "(the baseline is always run)")
    t.add_argument("--thresholds", default="0.7,0.8,0.9", help="threshold sampler values (the highest also + cache)")
    t.add_argument("--cache-preset", default="slowfast-headline", choices=sorted(CACHE_PRESETS))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-chat", action="store_true", help="JSONL: do not apply the tokenizer's chat template")
    t.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    t.add_argument("--device", default=None)
    t.add_argument("--dtype", default="auto")
    t.add_argument("--json", default=None, metavar="OUT.json")
    t.add_argument("--md", default=None, metavar="OUT.md")
    t.set_defaults(func=cmd_tasks, parser=t, kept=KEPT)
