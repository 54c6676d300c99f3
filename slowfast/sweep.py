"""``python -m slowfast sweep``: accuracy against speed over sampler and cache settings.

A point is ``{"sampler", "params", "cache"}``: SlowFast with some of its five parameters
(exploration_steps, horizon_threshold, stability_window, std_threshold,
high_confidence_threshold), the threshold sampler with its threshold, either with or without
dLLM-Cache (kp, kr, rho); the rest at their defaults. Points come from a grid
(``grid_points``) or a seeded random search over the parameters' ranges in
``slowfast/params.py`` (``random_points``); the one-token-per-forward baseline is added as
the reference. Each point decodes the same prompts (a task's held-out set or a JSONL file)
and is scored for accuracy and speed (mean NFE, forwards, tokens fed, seconds).

``pareto_front`` keeps the points no other point beats on both accuracy (higher) and mean
NFE (lower), leaving out points that scored 0 unless nothing scored more; ``best_first``
orders it as tables list it (most accurate first). Results go to a JSONL file, one line per
finished point, so a rerun with the same file skips what is done; a CSV is rewritten next to it.
Under ``torchrun`` every point's prompts are split across the ranks and gathered on rank 0,
which alone prints and writes.

For an app: ``iter_sweep(model, "story", points, count=4)`` yields one scored point at a
time; ``visuals.pareto_figure(points)`` draws them. ``tune_points(n, seed)`` is the app's Tune
sweep: a few informative fixed points, ``n`` random ones, and the baseline last.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import random
import sys
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Optional, Sequence

from .params import BY_NAME, DEFAULTS
from .problems import ProblemSet, problem_set

SWEEP_PARAMS: dict[str, tuple[str, ...]] = {
    "slowfast": ("exploration_steps", "horizon_threshold", "stability_window", "std_threshold",
                 "high_confidence_threshold"),
    "threshold": ("threshold",),
}
CACHE_PARAMS = ("kp", "kr", "rho")
ALL_PARAMS = tuple(n for names in SWEEP_PARAMS.values() for n in names) + CACHE_PARAMS
DEFAULT_GRID: dict[str, list[Any]] = {"high_confidence_threshold": [0.7, 0.8, 0.9, 0.95],
                                      "threshold": [0.7, 0.8, 0.9, 0.95]}
CACHE_MODES = ("auto", "off", "on", "both")
BASELINE_POINT: dict[str, Any] = {"sampler": "baseline", "params": {}, "cache": None}
# The app's Tune sweep starts from these before its random points: SlowFast with 1 and 2
# exploration steps (on the story task the embedded model's most accurate settings, at well under
# half the baseline's forwards: 97.3% and 98.0% of 150 held-out prompts at 38.9 and 39.2 mean NFE,
# against 90.7% for SlowFast at its defaults, 90.0% for the threshold sampler at 0.9 and 90.7% for
# the baseline at 96) and the threshold sampler at its default threshold, to measure them against.
INFORMATIVE_POINTS: tuple[dict[str, Any], ...] = (
    {"sampler": "slowfast", "params": {"exploration_steps": 1}, "cache": None},
    {"sampler": "slowfast", "params": {"exploration_steps": 2}, "cache": None},
    {"sampler": "threshold", "params": {"threshold": 0.9}, "cache": None},
)
CSV_COLUMNS = ("label", "sampler", *ALL_PARAMS, "accuracy", "nfe", "forwards", "tokens_fed", "seconds_per_prompt",
               "tokens_per_second", "stalled", "on_front", "task", "count", "gen_length", "block_length", "model")


# --- points --------------------------------------------------------------------------------------


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


def _check_names(grid: dict[str, Sequence[Any]], samplers: Sequence[str], cache: str) -> None:
    """Every axis is a known parameter that a chosen sampler (or the cache, when on) uses."""
    unknown = [n for n in grid if n not in ALL_PARAMS]
    if unknown:
        raise ValueError(f"sweep: unknown parameters {unknown}; allowed: {', '.join(ALL_PARAMS)}")
    _check_samplers(samplers)
    used = [n for s in samplers for n in SWEEP_PARAMS[s]] + ([] if cache == "off" else list(CACHE_PARAMS))
    unused = [n for n in grid if n not in used]
    if unused:
        raise ValueError(f"--grid: {', '.join(unused)} is not allowed with samplers {', '.join(samplers)} and "
                         f"cache {cache} (no point would use it); allowed: {', '.join(used)}")


def _cache_choices(mode: str, has_cache_axes: bool) -> tuple[bool, bool]:
    """(with no cache, with cache) for a cache mode."""
    if mode not in CACHE_MODES:
        raise ValueError(f"cache: {mode!r} is not allowed; allowed: {', '.join(CACHE_MODES)}")
    if mode == "auto":
        mode = "on" if has_cache_axes else "off"
    return mode in ("off", "both"), mode in ("on", "both")


def _check_samplers(samplers: Sequence[str]) -> None:
    bad = [s for s in samplers if s not in SWEEP_PARAMS]
    if bad or not samplers:
        raise ValueError(f"samplers: {bad or samplers!r} is not allowed; allowed: {', '.join(SWEEP_PARAMS)}")


def grid_points(grid: dict[str, Sequence[Any]], samplers: Sequence[str] = ("slowfast", "threshold"),
                cache: str = "auto", baseline: bool = True) -> list[dict[str, Any]]:
    """Every combination of the grid's values per sampler (a sampler with no axis in the grid
    runs once at its defaults), times the cache axes (kp, kr, rho; ``cache="auto"``: with the
    cache when the grid has a cache axis; ``"both"``: with and without)."""
    _check_names(grid, samplers, cache)
    without, with_ = _cache_choices(cache, any(n in grid for n in CACHE_PARAMS))
    caches: list[Optional[dict[str, Any]]] = [None] if without else []
    if with_:
        axes = [n for n in CACHE_PARAMS if n in grid]
        caches += [dict(zip(axes, combo)) for combo in itertools.product(*(grid[n] for n in axes))]
    points = [dict(BASELINE_POINT)] if baseline else []
    for sampler in samplers:
        axes = [n for n in SWEEP_PARAMS[sampler] if n in grid]
        for combo in itertools.product(*(grid[n] for n in axes)):
            for c in caches:
                points.append({"sampler": sampler, "params": dict(zip(axes, combo)),
                               "cache": None if c is None else dict(c)})
    return points


def draw(name: str, rng: random.Random) -> Any:
    """A value of ``name`` drawn uniformly from its range in ``params.PARAMETERS``."""
    p = BY_NAME[name]
    if isinstance(p.default, int) and not isinstance(p.default, bool):
        return rng.randint(max(int(p.low), 1), int(p.high))
    return round(rng.uniform(p.low, p.high), 3)


def random_points(n: int, seed: int = 0, samplers: Sequence[str] = ("slowfast", "threshold"),
                  cache: str = "auto", fixed: Optional[dict[str, Sequence[Any]]] = None,
                  baseline: bool = True) -> list[dict[str, Any]]:
    """``n`` points, samplers taken in turn, every swept parameter drawn from its range (or from
    ``fixed[name]``'s values when given); the same ``seed`` gives the same points."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"random: {n!r} is not allowed; it must be an integer >= 1")
    fixed = dict(fixed or {})
    _check_names(fixed, samplers, cache)
    without, with_ = _cache_choices(cache, any(name in fixed for name in CACHE_PARAMS))
    rng = random.Random(seed)

    def value(name: str) -> Any:
        return rng.choice(list(fixed[name])) if name in fixed else draw(name, rng)

    points = [dict(BASELINE_POINT)] if baseline else []
    for i in range(n):
        sampler = samplers[i % len(samplers)]
        params = {name: value(name) for name in SWEEP_PARAMS[sampler]}
        use_cache = with_ and (not without or rng.random() < 0.5)
        points.append({"sampler": sampler, "params": params,
                       "cache": {name: value(name) for name in CACHE_PARAMS} if use_cache else None})
    return points


def tune_points(n: int, seed: int = 0, baseline: bool = True) -> list[dict[str, Any]]:
    """The app's Tune sweep: ``INFORMATIVE_POINTS`` first, then ``random_points(n, seed)``, and the
    baseline last. The baseline decodes one token per forward, the slowest point by far, so it
    comes after the points it is the reference for instead of holding back the first of them."""
    points = [{**p, "params": dict(p["params"])} for p in INFORMATIVE_POINTS]
    points += random_points(n, seed=seed, baseline=False)
    return points + ([dict(BASELINE_POINT)] if baseline else [])


def point_label(point: dict[str, Any]) -> str:
    if point["sampler"] == "baseline":
        return "baseline, 1 token per forward"
    params = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point["params"].items())
    label = f"{point['sampler']} {params}" if params else f"{point['sampler']} (defaults)"
    if point.get("cache") is not None:
        c = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point["cache"].items())
        label += f" + cache {c}" if c else " + cache (defaults)"
    return label


def point_settings(point: dict[str, Any], gen_length: int, block_length: Optional[int] = None,
                   chat: bool = False, seed: int = 0):
    """The GenerationSettings of a point (the baseline at one token per forward)."""
    from .engine import GenerationSettings

    return GenerationSettings(sampler=point["sampler"], gen_length=gen_length, block_length=block_length or gen_length,
                              steps=gen_length, chat=chat, seed=seed, params=dict(point.get("params") or {}),
                              cache=None if point.get("cache") is None else dict(point["cache"]))


def point_key(point: dict[str, Any], problems: ProblemSet, block_length: int, model_name: str) -> str:
    """What identifies a finished point in a results file: settings, prompt set and model."""
    return json.dumps({"sampler": point["sampler"], "params": point.get("params") or {},
                       "cache": point.get("cache"), "task": problems.name, "source": problems.source,
                       "count": len(problems.problems), "gen_length": problems.gen_length,
                       "block_length": block_length, "chat": problems.chat, "model": model_name}, sort_keys=True)


# --- scoring -------------------------------------------------------------------------------------


def iter_sweep(model, task: str | ProblemSet, points: Sequence[dict[str, Any]], count: int = 8, *,
               gen_length: Optional[int] = None, block_length: Optional[int] = None,
               jsonl: Optional[str | Path] = None, chat: Optional[bool] = None, seed: int = 0,
               done: Collection[str] = (), warmup: bool = True, dist=None,
               progress: Optional[Callable[[int, int], None]] = None) -> Iterator[dict[str, Any]]:
    """Score ``points`` one at a time on ``task`` (a task name, a ``ProblemSet``, or ``jsonl``),
    yielding each scored point as soon as it is done.

    A scored point is the point (``sampler``, ``params``, ``cache``) plus ``label``, ``key``,
    ``settings`` (the full GenerationSettings dict with every parameter resolved, ready for
    ``GenerationSettings.from_dict``), the prompt set (``task``, ``count``, ``gen_length``,
    ``block_length``, ``metric``, ``model``), ``accuracy``, the means ``nfe``, ``forwards``,
    ``tokens_fed``, ``seconds`` (total), ``seconds_per_prompt``, ``tokens_per_second``,
    ``stalled`` (runs that hit the forward cap) and ``problems`` (per prompt: index, nfe,
    forwards, tokens_fed, seconds, score, text, stalled). Points whose key is in ``done`` are
    skipped. ``progress(runs_done, runs_total)`` is called after every prompt this process decodes.
    Every setting is checked (ValueError) before the first decode."""
    from .distributed import Dist
    from .problems import run_problem
    from .trace import tokens_per_second

    dist = dist or Dist()
    problems = task if isinstance(task, ProblemSet) else problem_set(
        task, count, jsonl=jsonl, gen_length=gen_length, chat=chat)
    B = block_length or problems.gen_length
    plan = []
    for point in points:
        settings = point_settings(point, problems.gen_length, B, problems.chat, seed)
        policy = settings.policy()  # bad settings fail here, before any decoding
        if settings.cache is not None and not model.supports_cache:
            raise ValueError(f"cache: dLLM-Cache is not available for this model ({model.name}); "
                             "allowed: points without the cache")
        key = point_key(point, problems, B, model.name)
        if key not in done:
            plan.append((point, settings, settings.to_dict(policy), key))
    mine = dist.shard(problems.problems)
    if warmup and plan and mine:
        run_problem(model, problems, mine[0], plan[0][1])
    total, runs = len(plan) * len(mine), 0
    for point, settings, resolved, key in plan:
        rows = []
        for p in mine:
            rows.append(run_problem(model, problems, p, settings))
            runs += 1
            if progress:
                progress(runs, total)
        rows = dist.gather_rows(rows)
        n = len(rows)
        mean = lambda k: sum(r[k] for r in rows) / n if n else 0.0  # noqa: E731
        secs = sum(r["seconds"] for r in rows)
        yield {
            "sampler": point["sampler"], "params": dict(point.get("params") or {}), "cache": point.get("cache"),
            "label": point_label(point), "key": key, "settings": resolved,
            "task": problems.name, "source": problems.source, "count": n, "gen_length": problems.gen_length,
            "block_length": B, "metric": problems.metric, "model": model.name,
            "accuracy": mean("score"), "nfe": mean("nfe"), "forwards": mean("forwards"),
            "tokens_fed": mean("tokens_fed"), "seconds": secs, "seconds_per_prompt": secs / n if n else 0.0,
            "tokens_per_second": tokens_per_second(problems.gen_length * n, secs),
            "stalled": sum(bool(r["stalled"]) for r in rows), "problems": rows,
        }


def pareto_front(points: Sequence[dict[str, Any]], accuracy: str = "accuracy", cost: str = "nfe") -> list[dict]:
    """The points no other point beats: none has higher (or equal) accuracy at lower (or equal)
    cost with one of them strictly better. Sorted by cost, so accuracy rises along the front;
    points with identical coordinates are all kept. A point that scored 0 is left out (the
    cheapest of them is on the front only for being cheap) unless no point scored above 0."""
    pts = [p for p in points if p.get(accuracy) is not None and p.get(cost) is not None]
    if any(p[accuracy] > 0 for p in pts):
        pts = [p for p in pts if p[accuracy] > 0]
    pts.sort(key=lambda p: (p[cost], -p[accuracy]))
    front: list[dict] = []
    for p in pts:
        if not front or p[accuracy] > front[-1][accuracy]:
            front.append(p)
        elif p[accuracy] == front[-1][accuracy] and p[cost] == front[-1][cost]:
            front.append(p)
    return front


def best_first(front: Sequence[dict[str, Any]], accuracy: str = "accuracy", cost: str = "nfe") -> list[dict]:
    """A front as a table lists it: the most accurate first, then the fewest forwards."""
    return sorted(front, key=lambda p: (-p[accuracy], p[cost]))


# --- files ---------------------------------------------------------------------------------------


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


# --- command line --------------------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.load:
        from .cli import check_output_path

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
            from visuals.pareto import pareto_figure

            pareto_figure(points).write_html(args.html, include_plotlyjs=True)
            print(f"figure written to {args.html}")
        return 0

    import torch

    from .bench import at_least, machine, machine_line, progress_bar
    from .cli import check_output_path
    from .distributed import setup
    from .models.loading import load_model

    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    _check_samplers(samplers)
    grid = parse_grid(args.grid)
    for value, flag in ((args.random, "--random"), (args.block_length, "--block-length")):
        at_least(value, flag, unset=" (omit it for the default)")
    at_least(args.threads, "--threads")
    if args.random is not None:
        points = random_points(args.random, args.seed, samplers, args.cache, fixed=grid, baseline=not args.no_baseline)
    else:
        if not grid:
            grid = {k: v for k, v in DEFAULT_GRID.items() if any(k in SWEEP_PARAMS[s] for s in samplers)}
        points = grid_points(grid, samplers, args.cache, baseline=not args.no_baseline)
    csv_path = args.csv or (str(Path(args.out).with_suffix(".csv")) if args.out else None)
    outputs = ((args.out, "--out"), (csv_path, "--csv" if args.csv else "--csv (default: --out with .csv)"),
               (args.html, "--html"))
    for path, flag in outputs:
        if path:
            check_output_path(path, flag)
    check_distinct([(args.jsonl, "--jsonl"), *outputs])
    if args.out:
        check_results_file(args.out)
    if args.task and args.jsonl:
        raise ValueError("--task and --jsonl: give one of them")
    problems = problem_set(args.task, args.count, jsonl=args.jsonl, gen_length=args.gen_length,
                           chat=(not args.no_chat) if args.jsonl else None)
    B = args.block_length or problems.gen_length
    for point in points:  # bad settings fail here, before a model is loaded
        point_settings(point, problems.gen_length, B, problems.chat).policy()
    torch.set_num_threads(args.threads)
    dist = setup(args.device)
    try:
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
                if not dist.is_main:
                    continue
                results.append(p)
                line = f"[{i}/{todo}] {point_line(p)}"
                if bar.disable:
                    print(line, flush=True)
                else:
                    bar.write(line)
                if args.out:
                    with open(args.out, "a", encoding="utf-8") as f:
                        f.write(json.dumps(p) + "\n")
        finally:
            bar.close()
        if dist.is_main:
            print()
            print(front_table(results))
            if csv_path:
                write_csv(csv_path, results)
            if args.out:
                print(f"results: {args.out} (one line per point; rerun to resume), {csv_path}")
            if args.html:
                from visuals.pareto import pareto_figure

                pareto_figure(results).write_html(args.html, include_plotlyjs=True)
                print(f"figure written to {args.html}")
    finally:
        dist.close()
    return 0


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
