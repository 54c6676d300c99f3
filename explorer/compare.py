"""Compare: the same prompt and seed under several configurations."""
from __future__ import annotations

import dataclasses

import gradio as gr

import visuals
from slowfast.session import BackgroundRun, stream_batches
from slowfast.tasks import TASKS
from slowfast.trace import Trace
from explorer.controls import controls_from
from explorer.run import RENDER_BUDGET, STREAM_SECONDS, new_run_id, stopped_note, verdict_of
from visuals.player import PlayerStream, dumps, whole_run
from explorer import sessions
from explorer.sessions import DeviceWork, begin_work, held, load, prompt_refusal


COMPARE_CONFIGS = ["baseline", "slowfast", "slowfast + cache", "threshold", "dream"]


def on_compare(model_name: str, prompt: str, configs: list[str], state: dict, *values):
    """Run each configuration in turn (one decoding at a time), saying which one runs, each
    streaming into the compare player's slot (the runs then play side by side on one step
    axis); a cancelled or abandoned compare stops its current run at once, and a stopped one
    starts no further configuration."""
    work = begin_work(state, "configuration")
    try:
        yield from compare_frames(model_name, prompt, configs, state, work, values)
    finally:
        work.finish()


def compare_frames(model_name: str, prompt: str, configs: list[str], state: dict, work: DeviceWork, values: tuple):
    refusal = prompt_refusal(prompt, model_name)  # before anything else, as a run's
    if refusal is not None:
        yield f"⚠️ {visuals.esc(refusal)}", gr.update(), gr.update()
        return
    if not isinstance(configs, list) or not all(isinstance(c, str) and c in COMPARE_CONFIGS for c in configs):
        yield (f"⚠️ configs: a list of {', '.join(COMPARE_CONFIGS)}; not {visuals.esc(repr(configs)[:80])}",
               gr.update(), gr.update())
        return
    model, note = load(model_name, state.get("trust_remote_code", False))
    if model is None:
        yield f"⚠️ {note}", gr.update(), gr.update()
        return
    if not configs:
        yield "Pick at least one configuration.", gr.update(), gr.update()
        return
    own = sessions.own_sampler_note(model, "Compare's configurations (baseline, SlowFast, threshold)")
    if own is not None:
        yield f"⚠️ {own}", gr.update(), gr.update()
        return
    try:
        jobs = configured(model, prompt, configs, controls_from(values))
    except (ValueError, TypeError, OverflowError) as exc:
        yield f"⚠️ {visuals.esc(str(exc))}", gr.update(), gr.update()
        return
    labels = list(configs)
    if sessions.decode_on_gpu is not None:  # Space: each configuration is one GPU call
        traces = []
        # (a GPU call cannot be stopped midway: Stop ends the compare before the next one)
        for i, (label, settings) in enumerate(held(state, [(lb, j.run.settings) for lb, j in zip(labels, jobs)],
                                                   work=work)):
            yield f"Running **{label}** ({i + 1} of {len(jobs)})…", gr.update(), gr.update()
            traces.append(Trace.from_dict(sessions.decode_on_gpu(model_name, prompt, dataclasses.asdict(settings))))
        if len(traces) < len(jobs):
            yield on_compare_end(state)
            return
        player = dumps([whole_run(t, new_run_id(), verdict=verdict_of(t), slot=i, label=label)
                        for i, (t, label) in enumerate(zip(traces, labels))])
    else:
        state.update(compare_live=(0, len(jobs)), stop_note=None)  # until its table: see on_compare_end
        for frame in stream_each(jobs, labels, state, work):
            yield frame
            if frame[0].startswith("Stopped"):
                return
        if work.stopped:
            yield on_compare_end(state)
            return
        traces, player = [job.trace() for job in jobs], gr.update()
    state["compare_live"] = None
    state["compare"] = traces
    yield (*summary(traces, labels), player)


def configured(model, prompt: str, configs: list[str], base) -> list[BackgroundRun]:
    """A run per configuration, every one checked before anything decodes."""
    jobs = []
    for label in configs:
        c = dataclasses.replace(base, sampler=label.split(" ")[0], cache=label.endswith("cache"))
        try:
            jobs.append(BackgroundRun(model, prompt, c.settings(), label=label))
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"{label}: {exc}") from None
    return jobs


def stream_each(jobs: list[BackgroundRun], labels: list[str], state: dict, work: DeviceWork):
    """Decode the configurations one after the other, each streaming into its slot. Each is held
    by the event's switch before it starts, so a Stop (an API client's: the page cancels the
    event itself) that lands at any moment, between two configurations too, ends the compare
    after the current run and starts no further one."""
    current = None
    try:
        for i, (label, job) in enumerate(zip(labels, held(state, jobs, work=work))):
            stream = PlayerStream(new_run_id(), slot=i, label=label)
            current = state["run"] = job.start()
            running = f"Running **{label}** ({i + 1} of {len(jobs)})…"
            yield running, gr.update(), gr.update()
            for trace, done in stream_batches(job, STREAM_SECONDS, budget=RENDER_BUDGET):
                if work.stopped:
                    break
                update = stream.end(trace, verdict=verdict_of(trace)) if done else stream.update(trace)
                if update is not None:  # each configuration's steps reach the browser as it decodes
                    yield running, gr.update(), dumps(update)
            state["compare_live"] = (i + 1, len(jobs))
            if work.stopped:
                yield on_compare_end(state)
                return
    finally:
        if current is not None:
            current.stop()


# The compare table's columns (short, so the ten fit the page's right column on a 1366 px
# screen, no header word broken) and their widths; the text column shows TEXT_CHARS characters
# of each text (its cell, the table's copy button and the API give the whole text).
COMPARE_HEADERS = ["config", "correct", "NFE", "speedup (NFE)", "tokens fed", "speedup (tokens)", "s",
                   "speedup (time)", "same text", "text"]
COMPARE_WIDTHS = ["11%", "10%", "6.5%", "10%", "9%", "11%", "6.5%", "10%", "6.5%", "19.5%"]
TEXT_CHARS = 80


def summary(traces: list[Trace], labels: list[str]) -> tuple[str, list]:
    """The message and the table (``COMPARE_HEADERS``): speedups against the first, the task's
    verdict when the prompt has one. Text from the runs goes in as it is: the table shows its
    cells as text (escaping it here would show ``&lt;|endoftext|&gt;``)."""
    rows = visuals.compare_table(traces, labels)
    table = [[r["label"], "—" if r["correct"] is None else "yes" if r["correct"] else "no", r["nfe"],
              f"{r['speedup_nfe']:.2f}x", r["tokens_fed"], f"{r['speedup_tokens']:.2f}x",
              round(r["seconds"], 2), f"{r['speedup']:.2f}x", "yes" if r["same_text"] else "no", r["text"]]
             for r in rows]
    task = rows[0]["task"] if rows else None
    scored = (f" The prompt is {article(task)} **{task}** problem: \"correct\" is its scorer's verdict "
              f"({TASKS[task].primary_metric.replace('_', ' ')})." if task else
              " \"correct\" is shown when the prompt is one of the embedded tasks' (arithmetic, story, copy).")
    return f"Compared {len(traces)} runs on the same prompt and seed.{scored}", table


def article(word: str) -> str:
    """"an" before a vowel ("an arithmetic problem"), else "a" ("a story problem")."""
    return "an" if word[:1].lower() in ("a", "e", "i", "o", "u") else "a"


def on_compare_end(state: dict) -> list:
    """After a compare's event: one stopped before its table says so (a finished one: nothing;
    as on_run_end, the stream's own last frame and this one may both come)."""
    progress = state.get("compare_live")
    if not progress:
        return [gr.update()] * 3
    stopped_note(state)
    done, total = state.get("compare_live") or progress
    return [f"Stopped: {done} of {total} configurations had run; press **Compare** to compare them again.",
            gr.update(), gr.update()]
