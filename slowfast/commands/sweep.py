"""``python -m slowfast sweep``: the command over ``slowfast/sweep.py``'s search.

Its flags (``--grid NAME=V1,V2`` read by ``parse_grid``), the points they ask for, the results
file (JSONL, one line per finished point, so a rerun with the same ``--out`` skips what is done;
a CSV rewritten next to it), the Pareto front printed per prompt set and model, and the figure
(``--html``). ``--load`` prints the front of an earlier results file and runs nothing. Under
``torchrun`` the search splits every point's prompts across the ranks; rank 0 alone prints and
writes.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch

from ..distributed import Dist, setup
from ..models.loading import load_model
from ..params import DEFAULTS
from ..problems import ProblemSet, problem_set
from ..sweep import (ALL_PARAMS, CACHE_MODES, CACHE_PARAMS, SWEEP_PARAMS, best_first, check_samplers, grid_points,
                     iter_sweep, pareto_front, point_key, point_settings, random_points)
from .common import at_least, check_output_path, machine, machine_line, progress_bar

DEFAULT_GRID: dict[str, list[Any]] = {"high_confidence_threshold": [0.7, 0.8, 0.9, 0.95],
                                      "threshold": [0.7, 0.8, 0.9, 0.95]}
CSV_COLUMNS = ("label", "sampler", *ALL_PARAMS, "accuracy", "nfe", "forwards", "tokens_fed", "seconds_per_prompt",
               "tokens_per_second", "stalled", "on_front", "task", "count", "gen_length", "block_length", "model")


# --- the flags -----------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="grid or random search over sampler and cache settings: accuracy vs NFE, "
                                     "Pareto front", description="Grid or random search over SlowFast's, the threshold "
                       "sampler's and dLLM-Cache's parameters on a task's held-out prompts or a JSONL file: accuracy, "
                       "mean NFE, tokens fed and time per point, the Pareto front of accuracy vs NFE. Runs under "
                       "torchrun too (one slice of the prompts per rank).")
    s.add_argument("--model", default="embedded")
    s.add_argument("--task", default=None, help="an embedded-model task (default: story)")
    s.add_argument("--jsonl", default=None, metavar="FILE", help='{"prompt", "answer"} per line instead of a task')
    s.add_argument("--count", type=int, default=8, help="prompts (the first held-out ones)")
    s.add_argument("--gen-length", type=int, default=None, help="default: the task's (JSONL: 96)")
    s.add_argument("--block-length", type=int, default=None, help="default: the generation length (one block)")
    s.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help=f"values of one parameter ({', '.join(ALL_PARAMS)}); repeat for more. Default: "
                        + " ".join(f"{k}={','.join(map(str, v))}" for k, v in DEFAULT_GRID.items()))
    s.add_argument("--random", type=int, default=None, metavar="N",
                   help="N random points over the parameters' ranges (--grid values restrict a parameter)")
    s.add_argument("--seed", type=int, default=0, help="the random search's seed")
    s.add_argument("--samplers", default="slowfast,threshold", help="comma-separated: slowfast, threshold")
    s.add_argument("--cache", default="auto", choices=CACHE_MODES,
                   help="with dLLM-Cache: auto (when the grid names kp, kr or rho), off, on, both")
    s.add_argument("--no-baseline", action="store_true", help="leave out the one-token-per-forward reference point")
    s.add_argument("--no-chat", action="store_true", help="JSONL: do not apply the tokenizer's chat template")
    s.add_argument("--out", default=None, metavar="FILE.jsonl", help="results, one line per point (resumable)")
    s.add_argument("--csv", default=None, metavar="FILE.csv", help="default: --out with .csv")
    s.add_argument("--html", default=None, metavar="FILE.html", help="also write the Pareto figure")
    s.add_argument("--load", default=None, metavar="FILE.jsonl", help="print the front of a results file and exit")
    s.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    s.add_argument("--device", default=None)
    s.add_argument("--dtype", default="auto")
    s.set_defaults(func=cmd_sweep)


def parse_value(name: str, text: str) -> Any:
    """A grid value for ``name``: an integer for integer parameters, else a number."""
    text = text.strip()
    kind = "an integer" if isinstance(DEFAULTS[name], int) else "a finite number"
    try:
        value = int(text) if isinstance(DEFAULTS[name], int) and not isinstance(DEFAULTS[name], bool) else float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"--grid: {name}={text!r} is not allowed; each value must be {kind}")
    return value


def parse_grid(specs: Iterable[str]) -> dict[str, list[Any]]:
    """``["name=v1,v2", ...]`` -> ``{name: [v1, v2]}`` (names from ``ALL_PARAMS``)."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or name not in ALL_PARAMS:
            raise ValueError(f"--grid: {spec!r} is not allowed; use NAME=V1,V2,... with NAME one of "
                             f"{', '.join(ALL_PARAMS)}")
        vals = [parse_value(name, v) for v in values.split(",") if v.strip()]
        if not vals:
            raise ValueError(f"--grid: {spec!r} has no values")
        grid[name] = vals
    return grid


def points_of(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The points the flags ask for: ``--random N`` of them, else the grid (``DEFAULT_GRID``'s
    axes that the samplers use when no ``--grid`` is given), the baseline first unless left out."""
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    check_samplers(samplers)
    grid = parse_grid(args.grid)
    for value, flag in ((args.random, "--random"), (args.block_length, "--block-length")):
        at_least(value, flag, unset=" (omit it for the default)")
    at_least(args.threads, "--threads")
    if args.random is not None:
        return random_points(args.random, args.seed, samplers, args.cache, fixed=grid, baseline=not args.no_baseline)
    if not grid:
        grid = {k: v for k, v in DEFAULT_GRID.items() if any(k in SWEEP_PARAMS[s] for s in samplers)}
    return grid_points(grid, samplers, args.cache, baseline=not args.no_baseline)


def check_outputs(args: argparse.Namespace) -> Optional[str]:
    """Every file the sweep will write, checked before it runs; returns the CSV's path (None: no CSV)."""
    csv_path = args.csv or (str(Path(args.out).with_suffix(".csv")) if args.out else None)
    outputs = ((args.out, "--out"), (csv_path, "--csv" if args.csv else "--csv (default: --out with .csv)"),
               (args.html, "--html"))
    for path, flag in outputs:
        if path:
            check_output_path(path, flag)
    check_distinct([(args.jsonl, "--jsonl"), *outputs])
    if args.out:
        check_results_file(args.out)
    return csv_path


def problems_of(args: argparse.Namespace) -> ProblemSet:
    """The prompts to score every point on: a task's held-out ones or a JSONL file's."""
    if args.task and args.jsonl:
        raise ValueError("--task and --jsonl: give one of them")
    return problem_set(args.task, args.count, jsonl=args.jsonl, gen_length=args.gen_length,
                       chat=(not args.no_chat) if args.jsonl else None)


# --- the command -----------------------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.load:
        return show_results(args)
    points = points_of(args)
    csv_path = check_outputs(args)
    problems = problems_of(args)
    B = args.block_length or problems.gen_length
    for point in points:  # bad settings fail here, before a model is loaded
        point_settings(point, problems.gen_length, B, problems.chat).policy()
    torch.set_num_threads(args.threads)
    dist = setup(args.device)
    try:
        results = run_points(args, dist, problems, points, B)
        if dist.is_main:
            report(args, results, csv_path)
    finally:
        dist.close()
    return 0


def show_results(args: argparse.Namespace) -> int:
    """``--load``: the front of each sweep in a results file (and ``--html``'s figure of them all)."""
    if args.html:
        check_output_path(args.html, "--html")
        check_distinct([(args.load, "--load"), (args.html, "--html")])
    if not Path(args.load).is_file():
        raise ValueError(f"--load: {args.load} does not exist (or is not a file), so it holds no scored points; "
                         "allowed: a results file written by sweep --out")
    points = load_points(args.load)
    if not points:
        raise ValueError(f"--load: {args.load} holds no scored points")
    for name, pts in groups(points).items():
        print(name)
        print(front_table(pts))
        print()
    if args.html:
        write_figure(points, args.html)
    return 0


def run_points(args: argparse.Namespace, dist: Dist, problems: ProblemSet, points: list[dict[str, Any]],
               B: int) -> list[dict[str, Any]]:
    """Load the model and score the points ``--out`` does not hold yet, appending each to it as it
    is done; returns every point of this sweep (those found in ``--out`` first; rank 0's list)."""
    device = dist.device(args.device)
    model = load_model(args.model, device=device, dtype=args.dtype)
    keys = {point_key(p, problems, B, model.name) for p in points}
    earlier = [p for p in load_points(args.out) if p["key"] in keys] if (args.out and dist.is_main) else []
    done = dist.broadcast([p["key"] for p in earlier])
    results = list(earlier)
    todo = len(points) - len(done)
    if dist.is_main:
        print(f"model: {args.model} | machine: {machine_line(machine(device, args.threads, dist.world))}")
        where = f"{len(done)} already in {args.out}, {todo} to run" if args.out else \
            f"{todo} to run, not saved: no --out"
        print(f"sweep: {len(points)} points ({where}) "
              f"on {problems.describe()} | gen {problems.gen_length}, block {B}")
        if args.out and todo:
            end_last_line(args.out)
    bar = progress_bar(todo * len(dist.shard(problems.problems)), "sweep", dist.is_main)
    last = [0]

    def tick(runs: int, total: int) -> None:
        bar.update(runs - last[0])
        last[0] = runs

    try:
        for i, p in enumerate(iter_sweep(model, problems, points, block_length=B, done=set(done), dist=dist,
                                         progress=tick), 1):
            if dist.is_main:
                results.append(p)
                keep(args, p, f"[{i}/{todo}] {point_line(p)}", bar)
    finally:
        bar.close()
    return results


def keep(args: argparse.Namespace, point: dict[str, Any], line: str, bar) -> None:
    """Say that ``point`` is scored (above the progress bar when it shows) and append it to ``--out``."""
    if bar.disable:
        print(line, flush=True)
    else:
        bar.write(line)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(point) + "\n")


def report(args: argparse.Namespace, results: list[dict[str, Any]], csv_path: Optional[str]) -> None:
    """The front of the sweep, then the CSV and the figure."""
    print()
    print(front_table(results))
    if csv_path:
        write_csv(csv_path, results)
    if args.out:
        print(f"results: {args.out} (one line per point; rerun to resume), {csv_path}")
    if args.html:
        write_figure(results, args.html)


def write_figure(points: Sequence[dict[str, Any]], path: str) -> None:
    from visuals.pareto import pareto_figure  # here: visuals loads plotly, which no other command needs at start

    pareto_figure(points).write_html(path, include_plotlyjs=True)
    print(f"figure written to {path}")


# --- the results file ------------------------------------------------------------------------------


def is_point(obj: Any) -> bool:
    """Is ``obj`` a scored point as a results file holds it?"""
    return isinstance(obj, dict) and "key" in obj and "accuracy" in obj and "nfe" in obj


def load_points(path: str | Path) -> list[dict[str, Any]]:
    """The scored points in a JSONL results file (a line cut short by a crash is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            print(f"warning: {path}: skipped a line that is not JSON (a run cut short?)", file=sys.stderr)
            continue
        if is_point(obj):
            points.append(obj)
    return points


def check_results_file(path: str | Path, flag: str = "--out") -> None:
    """Refuse (ValueError) an existing file that is not a results file: every non-empty line
    must be a scored point, except a last line a crash cut short (it has no newline)."""
    path = Path(path)
    if not path.is_file():
        return
    allowed = "a results file of an earlier sweep (one scored point per line) or a new file"
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{flag}: {path} cannot be read as text ({exc}); allowed: {allowed}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ok = is_point(json.loads(line))
        except json.JSONDecodeError:
            ok = n == len(lines)  # the last line, cut short before its newline
        if not ok:
            raise ValueError(f"{flag}: {path} line {n} is not a scored sweep point; allowed: {allowed}")


def end_last_line(path: str | Path) -> None:
    """Before appending to a results file: a last line a crash cut short is dropped (a whole
    point that only lacks its newline gets one), so the next point starts a line of its own."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        try:
            whole = is_point(json.loads(data[start:]))
        except ValueError:  # not JSON (or not UTF-8): cut short
            whole = False
        if whole:
            f.write(b"\n")
        else:
            f.truncate(start)
            print(f"warning: {path}: dropped its last line, cut short by an earlier run", file=sys.stderr)


def check_distinct(paths: Sequence[tuple[Optional[str], str]]) -> None:
    """Refuse two flags that name the same file (the second write would replace the first)."""
    seen: dict[Path, str] = {}
    for path, flag in paths:
        if not path:
            continue
        key = Path(path).expanduser().resolve()
        if key in seen:
            raise ValueError(f"{flag}: {path} is not allowed; it is the file of {seen[key]}, which it would "
                             f"overwrite; allowed: another file name")
        seen[key] = flag


def csv_row(point: dict[str, Any], on_front: bool) -> dict[str, Any]:
    params = (point.get("settings") or {}).get("params") or {}
    cache = (point.get("settings") or {}).get("cache") or {}
    row = {name: params.get(name, "") for name in ALL_PARAMS if name not in CACHE_PARAMS}
    row.update({name: cache.get(name, "") for name in CACHE_PARAMS})
    row.update({k: point.get(k, "") for k in CSV_COLUMNS if k not in row})
    row["on_front"] = on_front
    return row


def write_csv(path: str | Path, points: Sequence[dict[str, Any]]) -> None:
    front = {id(p) for p in pareto_front(points)}
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        w.writeheader()
        for p in points:
            w.writerow(csv_row(p, id(p) in front))


# --- what it prints --------------------------------------------------------------------------------


def point_line(p: dict[str, Any]) -> str:
    stalled = f" | {p['stalled']} stalled" if p.get("stalled") else ""
    return (f"acc {p['accuracy']:6.1%} | NFE {p['nfe']:6.1f} | tokens fed {p['tokens_fed']:8.0f} | "
            f"{p['seconds_per_prompt']:.3f} s/prompt{stalled} | {p['label']}")


def front_table(points: Sequence[dict[str, Any]]) -> str:
    front = best_first(pareto_front(points))
    lines = [f"Pareto front, accuracy vs mean NFE ({len(front)} of {len(points)} points), most accurate first:",
             f"{'acc':>6s} {'NFE':>7s} {'tokens fed':>10s} {'s/prompt':>8s}  settings"]
    for p in front:
        lines.append(f"{p['accuracy']:6.1%} {p['nfe']:7.1f} {p['tokens_fed']:10.0f} {p['seconds_per_prompt']:8.3f}  "
                     f"{p['label']}")
    return "\n".join(lines)


def groups(points: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Points by prompt set and model (a results file may hold several sweeps)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        name = (f"{p.get('model')} | {p.get('task')}: {p.get('count')} prompts | gen {p.get('gen_length')}, "
                f"block {p.get('block_length')} | accuracy = {p.get('metric')}")
        out.setdefault(name, []).append(p)
    return out
