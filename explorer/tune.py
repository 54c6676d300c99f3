"""Tune: a small random search, streamed, whose front loads into the controls."""
from __future__ import annotations

import math
import threading
import time
import weakref
from typing import Any, Optional

import gradio as gr

import visuals
from slowfast.params import BY_NAME, shown
from slowfast.session import DECODES, preset_controls
from slowfast.tasks import TASKS, example_for
from explorer.controls import CONTROL_NAMES
from explorer.sessions import SESSIONS, begin_work, load, own_sampler_note


TUNE_COUNT, TUNE_POINTS = (2, 20), (2, 24)  # the Tune tab's ranges: prompts per setting, random settings
# The scored baseline per model (by id, held weakly: a model that is let go takes its entries with
# it), by its sweep key (settings, task, count, model) and seed: a second sweep of the same prompts
# reuses it instead of decoding it again.
BASELINES: dict[int, tuple[weakref.ref, dict[tuple[str, int], dict]]] = {}


def cached_baselines(model) -> dict:
    """The model's scored baselines (a dict to read and fill)."""
    key = id(model)
    entry = BASELINES.get(key)
    if entry is None or entry[0]() is not model:
        try:
            ref = weakref.ref(model, lambda _ref: BASELINES.pop(key, None))
        except TypeError:  # a model that takes no weak reference: nothing is kept
            return {}
        entry = BASELINES[key] = (ref, {})
    return entry[1]


def front_table(front: list[dict]) -> list[list]:
    return [[round(p["accuracy"], 3), round(p["nfe"], 1), round(p["tokens_fed"]), p["label"]]
            for p in front]  # the long label last


def on_tune(model_name: str, task: str, count: int, points: int, seed: int, state: dict):
    """A small random search, live: each scored point redraws the scatter and the front.

    The sweep is ``tune_points``: SlowFast with 1 and 2 exploration steps and the threshold
    sampler at 0.9 first, then the random settings, then the one-token-per-forward baseline,
    the slowest, last (at once when a sweep of the same model, task, count and seed scored it
    before). No warm-up decode: the first setting is the first thing decoded and streamed. The
    table lists the front most accurate first."""
    from slowfast.problems import problem_set
    from slowfast.sweep import INFORMATIVE_POINTS, best_first, pareto_front, point_key, tune_points

    refusal = tune_input_refusal(task, count, points, seed)
    if refusal is not None:
        yield refusal, None, None
        return
    start = time.monotonic()
    model, refusal = tune_model(model_name, state)
    if model is None:
        yield refusal, None, None
        return
    count, seed = int(count), int(seed or 0)
    try:
        todo = tune_points(int(points), seed=seed)
        problems = problem_set(task, count)
    except ValueError as exc:
        yield f"⚠️ {visuals.esc(str(exc))}", None, None
        return
    state["tune_task"] = task
    baseline = todo[-1]
    baselines = cached_baselines(model)
    cache_key = (point_key(baseline, problems, problems.gen_length, model.name), seed)
    known = baselines.get(cache_key)
    scored: list[dict] = []
    what = (f"{len(INFORMATIVE_POINTS)} fixed informative settings, {int(points)} random ones, and the "
            f"one-token-per-forward baseline last{' (from the last sweep of these prompts)' if known else ''}")
    yield f"Scoring {len(todo)} settings ({what}) on {count} held-out **{task}** prompts…", gr.update(), \
        gr.update()

    def frame(point: dict) -> tuple:
        scored.append(point)
        front = best_first(pareto_front(scored))
        state["tune"] = front
        return (f"{len(scored)} of {len(todo)} settings scored in {time.monotonic() - start:.1f} s ({what}) on "
                f"{count} **{task}** prompts each; the table lists the front, most accurate first: the settings "
                "no other beats on both accuracy and NFE. Click a row to load its settings (and one of the "
                "task's prompts) into the explorer.",
                visuals.pareto_figure(scored, front), front_table(front))

    work = begin_work(state, "setting")  # Stop, or the client going away, stops the prompt under way
    for point in swept(work, model, problems, todo[:-1] if known else todo, count, seed):
        if point["sampler"] == "baseline":
            baselines[cache_key] = point
        yield frame(point)
    if work.stopped:
        yield (f"Stopped: {len(scored)} of {len(todo)} settings scored in {time.monotonic() - start:.1f} s; "
               "the setting under way was not scored and no further one starts."), gr.update(), gr.update()
    elif known:
        yield frame(known)


def swept(work, model, problems, points: list[dict], count: int, seed: int):
    """The sweep's scored points, decoded under the device lock (one decoding at a time, as runs
    and compares), each prompt's run held by this event's stop switch: Stop ends the run under way
    after its current forward, and the sweep with it."""
    from slowfast.sweep import iter_sweep

    try:
        with DECODES.decoding("sweep"):
            yield from iter_sweep(model, problems, points, count, seed=seed, warmup=False,
                                  hold=lambda run: work.hold(SweepRun(run)))
    finally:
        work.finish()


class SweepRun:
    """A sweep's engine Run as the stop switch holds it (``stop()`` and ``done``): Stop ends it
    after its current forward."""

    def __init__(self, run):
        self.run = run
        self.done = threading.Event()  # never set: stopping a finished Run does nothing

    def stop(self) -> None:
        self.run.stop()


def whole(value: Any) -> Optional[int]:
    """``value`` as an int when it is a whole number (not text, a truth value or infinity)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value)


def tune_input_refusal(task: str, count: Any, points: Any, seed: Any = 0) -> Optional[str]:
    """Tune's message for a count, a number of settings, a seed or a task it does not allow (None:
    all allowed)."""
    for value, (low, high), name in ((count, TUNE_COUNT, "Prompts per setting"),
                                     (points, TUNE_POINTS, "Random settings")):
        n = whole(value)
        if n is None or not low <= n <= high:
            return f"⚠️ {name}: {visuals.esc(shown(value))} is not allowed; allowed: a whole number from {low} to {high}"
    n = whole(0 if seed is None else seed)
    if n is None or not BY_NAME["seed"].accepts(n):
        return (f"⚠️ Seed: {visuals.esc(shown(seed))} is not allowed; allowed: a whole number from 0 to "
                f"{BY_NAME['seed'].maximum}")
    if not isinstance(task, str) or task not in TASKS:
        return f"⚠️ Task: {visuals.esc(shown(task))} is not allowed; allowed: {', '.join(TASKS)}"
    return None


def tune_model(model_name: str, state: dict) -> tuple[Any, str]:
    """The model to sweep, or None and the message saying why it cannot be swept."""
    model, note = load(model_name, state.get("trust_remote_code", False))
    if model is None:
        return None, f"⚠️ {note}"
    own = own_sampler_note(model, "Tune's sweep (SlowFast, threshold, baseline)")
    if own is not None:
        return None, f"⚠️ {own}"
    return model, ""


def on_tune_select(prompt: str, evt: gr.SelectData, request: gr.Request):
    """A clicked row of the front: its settings into every control and, when the prompt box does
    not hold a prompt of the sweep's task, that task's first held-out prompt (the sweep's
    generation length is the task's)."""
    state = SESSIONS.get(getattr(request, "session_hash", None))
    front = state.get("tune") or []
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if not isinstance(row, int) or not 0 <= row < len(front):
        return ["", gr.update(), *[gr.update()] * len(CONTROL_NAMES)]
    settings = front[row]["settings"]
    values = preset_controls({"settings": settings})
    values["sampler"] = settings["sampler"]
    values["cache"] = settings.get("cache") is not None
    task, found = state.get("tune_task"), example_for(prompt or "")
    new_prompt = gr.update()
    loaded = f"Loaded **{visuals.esc(front[row]['label'])}** into the controls"
    if task in TASKS and (found is None or found[0].name != task):
        new_prompt = gr.update(value=TASKS[task].examples("heldout", 1, seed=0)[0].prompt)
        loaded += f", and a held-out **{task}** prompt into the prompt box"
    return [f"{loaded}: press Run to watch it.", new_prompt,
            *[gr.update(value=values[n]) if n in values else gr.update() for n in CONTROL_NAMES]]
