"""Tune: a small random search, streamed, whose front loads into the controls."""
from __future__ import annotations


import gradio as gr

import visuals
from slowfast.session import DECODES, preset_controls
from slowfast.tasks import TASKS, example_for
from explorer.controls import CONTROL_NAMES
from explorer.sessions import SESSIONS, load


TUNE_COUNT, TUNE_POINTS = (2, 20), (2, 24)  # the Tune tab's ranges: prompts per setting, random settings


def on_tune(model_name: str, task: str, count: int, points: int, seed: int, state: dict):
    """A small random search, live: each scored point redraws the scatter and the front."""
    from slowfast.sweep import iter_sweep, pareto_front, random_points

    for value, (low, high), name in ((count, TUNE_COUNT, "Prompts per setting"),
                                     (points, TUNE_POINTS, "Random settings")):
        if value is None or not low <= value <= high or value != int(value):
            yield f"⚠️ {name}: {value} is not allowed; allowed: a whole number from {low} to {high}", None, None
            return
    if task not in TASKS:
        yield f"⚠️ Task: {visuals.esc(str(task))} is not allowed; allowed: {', '.join(TASKS)}", None, None
        return
    model, note = load(model_name, state.get("trust_remote_code", False))
    if model is None:
        yield f"⚠️ {note}", None, None
        return
    try:
        todo = random_points(int(points), seed=int(seed or 0))
    except ValueError as exc:
        yield f"⚠️ {visuals.esc(str(exc))}", None, None
        return
    state["tune_task"] = task
    scored: list[dict] = []
    what = f"{int(points)} random settings and the baseline" if len(todo) > int(points) else "settings"
    yield f"Scoring {len(todo)} settings ({what}) on {int(count)} held-out **{task}** prompts…", gr.update(), \
        gr.update()
    with DECODES.decoding("sweep"):  # one decoding at a time, as runs and compares
        for point in iter_sweep(model, task, todo, int(count), seed=int(seed or 0)):
            scored.append(point)
            front = pareto_front(scored)
            state["tune"] = front
            table = [[round(p["accuracy"], 3), round(p["nfe"], 1), round(p["tokens_fed"]), p["label"]]
                     for p in front]  # the long label last
            yield (f"{len(scored)} of {len(todo)} settings scored ({what}) on {int(count)} **{task}** prompts; "
                   "the table lists the front: the settings no other beats on both accuracy and NFE. Click a row "
                   "to load its settings (and one of the task's prompts) into the explorer.",
                   visuals.pareto_figure(scored, front), table)


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
