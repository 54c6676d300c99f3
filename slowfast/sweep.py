"""Accuracy against speed over sampler and cache settings: the search ``python -m slowfast sweep``
(``slowfast/commands/sweep.py``) and the app's Tune tab run.

A point is ``{"sampler", "params", "cache"}``: SlowFast with some of its five parameters
(exploration_steps, horizon_threshold, stability_window, std_threshold,
high_confidence_threshold), the threshold sampler with its threshold, either with or without
dLLM-Cache (kp, kr, rho); the rest at their defaults. Points come from a grid
(``grid_points``) or a seeded random search over the parameters' ranges in
``slowfast/params.py`` (``random_points``); the one-token-per-forward baseline is added as
the reference. Each point decodes the same prompts (a task's held-out set or a JSONL file)
and is scored for accuracy and speed (mean NFE, forwards, tokens fed, seconds); a scored
point's ``key`` (``point_key``) is what a results file is resumed by.

``pareto_front`` keeps the points no other point beats on both accuracy (higher) and mean
NFE (lower), leaving out points that scored 0 unless nothing scored more; ``best_first``
orders it as tables list it (most accurate first). Under ``torchrun`` (``dist``) every point's
prompts are split across the ranks and gathered on rank 0.

For an app: ``iter_sweep(model, "story", points, count=4)`` yields one scored point at a
time; ``visuals.pareto_figure(points)`` draws them. ``tune_points(n, seed)`` is the app's Tune
sweep: a few informative fixed points, ``n`` random ones, and the baseline last.
"""
from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Optional, Sequence

from .distributed import Dist
from .engine import GenerationSettings
from .params import BY_NAME
from .problems import ProblemSet, problem_set, run_problem
from .trace import tokens_per_second

SWEEP_PARAMS: dict[str, tuple[str, ...]] = {
    "slowfast": ("exploration_steps", "horizon_threshold", "stability_window", "std_threshold",
                 "high_confidence_threshold"),
    "threshold": ("threshold",),
}
CACHE_PARAMS = ("kp", "kr", "rho")
ALL_PARAMS = tuple(n for names in SWEEP_PARAMS.values() for n in names) + CACHE_PARAMS
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


# --- points --------------------------------------------------------------------------------------


def _check_names(grid: dict[str, Sequence[Any]], samplers: Sequence[str], cache: str) -> None:
    """Every axis is a known parameter that a chosen sampler (or the cache, when on) uses."""
    unknown = [n for n in grid if n not in ALL_PARAMS]
    if unknown:
        raise ValueError(f"sweep: unknown parameters {unknown}; allowed: {', '.join(ALL_PARAMS)}")
    check_samplers(samplers)
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


def check_samplers(samplers: Sequence[str]) -> None:
    """Refuse (ValueError) no sampler, or one the sweep has no parameters for."""
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
               progress: Optional[Callable[[int, int], None]] = None,
               hold: Optional[Callable[[Any], bool]] = None) -> Iterator[dict[str, Any]]:
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
    ``hold(run)`` is told each prompt's engine Run before it decodes (the app's Stop stops it after
    its current forward); when it refuses a run, or the run was stopped, the sweep ends there and
    the setting under way is not yielded.
    Every setting is checked (ValueError) before the first decode."""
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
    if warmup and plan and mine and run_problem(model, problems, mine[0], plan[0][1], hold=hold) is None:
        return
    total, runs = len(plan) * len(mine), 0
    for point, settings, resolved, key in plan:
        rows = []
        for p in mine:
            row = run_problem(model, problems, p, settings, hold=hold)
            if row is None:  # stopped: no partial setting is scored
                return
            rows.append(row)
            runs += 1
            if progress:
                progress(runs, total)
        yield scored_point(point, key, resolved, problems, B, model.name, dist.gather_rows(rows))


def scored_point(point: dict, key: str, resolved: dict, problems: ProblemSet, block_length: int,
                 model_name: str, rows: list[dict]) -> dict[str, Any]:
    """A point with its prompt set and the means of its scored ``rows`` (see ``iter_sweep``)."""
    n = len(rows)
    mean = lambda k: sum(r[k] for r in rows) / n if n else 0.0  # noqa: E731
    secs = sum(r["seconds"] for r in rows)
    return {
        "sampler": point["sampler"], "params": dict(point.get("params") or {}), "cache": point.get("cache"),
        "label": point_label(point), "key": key, "settings": resolved,
        "task": problems.name, "source": problems.source, "count": n, "gen_length": problems.gen_length,
        "block_length": block_length, "metric": problems.metric, "model": model_name,
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
