"""SlowFast Explorer: a Gradio UI over the step engine. Wiring only.

Run locally with ``python app.py`` (127.0.0.1:7860 unless GRADIO_SERVER_NAME/PORT say
otherwise); the same file is a Hugging Face Space's ``app_file``. Everything shown comes
from ``visuals`` (pure functions of a Trace) and the engine's StepRecord stream.
"""
from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import gc
import inspect
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import anyio
import gradio as gr

import visuals
from slowfast.cache import CACHE_PRESETS
from slowfast.models.loading import EMBEDDED_DIR, KNOWN_MODELS, check_memory
from slowfast.samplers.slowfast import VARIANT_DEFAULTS
from slowfast.session import (
    DEFAULT_PROMPT,
    PRESETS_DIR,
    DECODES,
    DeviceEvents,
    BackgroundRun,
    Controls,
    ModelLoadError,
    ModelPool,
    SessionStore,
    check_controls,
    example_prompts,
    load_presets,
    preset_controls,
    run_to_end,
    stream_steps,
)
from slowfast.tasks import TASKS, example_for
from slowfast.trace import Trace, tokens_per_second

PRESETS = load_presets(PRESETS_DIR)
TASK_NAMES = list(TASKS)
SESSION_SECONDS = 3600  # a browser's runs and traces are dropped this long after its last event
MAX_SESSIONS = 64  # browsers whose last run is kept for scrubbing, export and compare
QUEUE_SIZE = 64  # events waiting for the device; more are refused with "queue full"
MAX_UPLOAD = "16mb"  # largest trace file a browser may upload
REFRESH_SECONDS = 0.3  # how often a compare reports progress
FRAME_SECONDS = 0.08  # a live run shows each step for at least this long (stream_steps)
RENDER_BUDGET = 0.05  # while a run decodes, drawing may take at most this share of its time (bench render)
PLAY_SECONDS = 0.35  # Play shows each step this long
TUNE_COUNT, TUNE_POINTS = (2, 20), (2, 24)  # the Tune tab's ranges: prompts per setting, random settings


def _slider_value(self: gr.Slider, payload: Any) -> Any:
    """gr.Slider.preprocess without its bounds check (see below)."""
    return payload if payload is None else gr.Number.round_to_precision(payload, self.precision)


# A number typed into a slider's box reaches the handler even outside the slider's range: the
# settings check then says what is allowed, Tune refuses it and the step slider clamps it
# (Gradio's own bounds check answers a bare "Error" on every output). Class-wide: Gradio
# rebuilds a component from its class whenever an event updates it, so an instance's own
# method would be lost, and a subclass makes Gradio write an app.pyi stub next to this file.
# Every slider of this app is one of ours.
gr.Slider.preprocess = _slider_value
POOL = ModelPool()
CONTROL_NAMES = [f.name for f in dataclasses.fields(Controls)]
PLOTS = ["certainty_heatmap", "stage_timeline", "convergence", "cache_hits", "speed"]
VIEW_NAMES = ["canvas", *PLOTS, "status", "explain"]  # what render() returns, in order
COMPARE_CONFIGS = ["baseline", "slowfast", "slowfast + cache", "threshold", "dream"]

def gpu_seconds(model_name: str, prompt, settings: dict) -> int:
    """The GPU time a Space asks for: grows with the generation length."""
    return int(min(300, 30 + settings.get("gen_length", 128) * 0.5))


def decode_for_space(model_name: str, prompt, settings: dict) -> dict:
    """One whole decoding in a ZeroGPU Space's GPU worker; only JSON crosses back, never tensors."""
    from slowfast.engine import GenerationSettings

    model = POOL.get(model_name)
    return run_to_end(model, prompt, GenerationSettings(**settings)).to_dict()


def space_decoder():
    """``decode_for_space`` under ``spaces.GPU`` on a ZeroGPU Space (SPACES_ZERO_GPU set), else
    None: elsewhere runs stream from a local thread."""
    if not os.environ.get("SPACES_ZERO_GPU"):
        return None
    try:
        import spaces  # type: ignore
    except ImportError:
        return None
    return spaces.GPU(duration=gpu_seconds)(decode_for_space)


_decode_on_gpu = space_decoder()


def named(fn, *names: str, device: bool = False):
    """``fn`` wired for Gradio: a signature naming its inputs, so the API's parameters are
    ``prompt``, ``gen_length``, ... (Gradio reads them from the signature), and its ``state``
    argument (where ``names`` has "state") taken from this browser's server-side session.
    ``device``: a generator that holds the device; its time is logged in ``DEVICE``."""
    at = names.index("state") if "state" in names else None
    shown = [n for n in names if n != "state"]

    def with_state(args: tuple, request: Optional[gr.Request]) -> list:
        args = list(args)
        if len(args) == len(shown) + 1:  # Gradio passes the request in its place in the signature
            request = args.pop()
        if at is not None:
            args.insert(at, SESSIONS.get(getattr(request, "session_hash", None)))
        return args

    if inspect.isgeneratorfunction(fn):
        # An async generator, so that Gradio's cancel (Stop, a client's cancel) raises right
        # here instead of waiting for the garbage collector: the session's run stops at once.
        async def wrapper(*args, request: Optional[gr.Request] = None):
            args = with_state(args, request)
            state = args[at] if at is not None else {}
            gen = fn(*args)
            mine: list = []  # the runs this event started
            token = DEVICE.start() if device else None
            ended = threading.Event()

            def end(_task=None) -> None:
                """The event is over, however it ended: its runs stop after their current
                forward, its generator is closed and its device time logged (once)."""
                if ended.is_set():
                    return
                ended.set()
                # (on the device, the session's latest run is this event's even when it began
                # in the frame being computed as the event was cancelled)
                for job in [*mine, state.get("run") if device else None]:
                    if job is not None and not job.done.is_set():
                        job.stop()
                if token is not None:
                    DEVICE.end(token)
                threading.Thread(target=close_when_idle, args=(gen,), daemon=True).start()

            # Gradio closes its own wrapper around this generator when an event is cancelled
            # between two frames, not this generator (that waits for the garbage collector):
            # the end of the event's task is what says for sure that nobody is watching.
            task = asyncio.current_task()
            if task is not None and GRADIO_EVENT_TASK in task.get_name():
                task.add_done_callback(end)
            try:
                while True:
                    item = await anyio.to_thread.run_sync(next, gen, DONE)
                    job = state.get("run") if device else None  # only device events start runs
                    if job is not None and not any(job is j for j in mine):
                        mine.append(job)
                    if item is DONE:
                        return
                    yield item
            finally:
                end()
    else:
        def wrapper(*args, request: Optional[gr.Request] = None):
            return fn(*with_state(args, request))
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    wrapper.__annotations__ = {"request": gr.Request}
    wrapper.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in shown]
        + [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                             annotation=gr.Request)])
    return wrapper


DONE = object()
GRADIO_EVENT_TASK = "<gradio-sep>"  # in the name Gradio's queue gives each event's task


def stop_run(state: dict) -> None:
    job = state.get("run")
    if job is not None and not job.done.is_set():
        job.stop()


def close_when_idle(gen) -> None:
    """Close a generator that another thread may still be running (its finally runs)."""
    for _ in range(600):
        try:
            gen.close()
            return
        except ValueError:  # generator already executing
            time.sleep(0.05)


def end_session(state: dict) -> None:
    """A browser session ended or expired: stop its run, drop its traces and files."""
    stop_run(state)
    folder = state.get("export_dir")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
    state.clear()
    release_memory()


def release_memory() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise, so RSS never falls)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


SESSIONS = SessionStore(end_session, max_sessions=MAX_SESSIONS, ttl=SESSION_SECONDS)


DEVICE = DeviceEvents()  # how long device events hold it, for the queue note


def device_waiting(demo: gr.Blocks, session_hash: Optional[str] = None) -> int:
    """Other browsers' events waiting in Gradio's queue for the device (0 where the queue
    cannot be read)."""
    queue = getattr(getattr(demo, "_queue", None), "event_queue_per_concurrency_id", {}).get("device")
    return sum(1 for event in getattr(queue, "queue", ()) or () if getattr(event, "session_hash", None) != session_hash)


def queue_note_for(demo: gr.Blocks):
    """A handler for the moment Run or Compare is clicked: how long this browser will wait."""
    def queue_note(request: gr.Request):
        note = DEVICE.note(device_waiting(demo, getattr(request, "session_hash", None)))
        return note or gr.update()
    return queue_note


def on_unload(request: gr.Request) -> None:
    """The browser closed the page: stop its run and free its traces now."""
    SESSIONS.drop(request.session_hash)


def controls_from(values: tuple) -> Controls:
    return Controls(**dict(zip(CONTROL_NAMES, values)))


def render(trace: Optional[Trace], step: Optional[int] = None, only: Optional[str] = None) -> list:
    """Canvas, the five plots and the status line for ``trace`` as of ``step``. With ``only``
    (a live run) just that plot is redrawn: the one on the visible tab."""
    if trace is None:
        return ["", *[None] * len(PLOTS), "", visuals.explain_step(None)]
    figs = [getattr(visuals, name)(trace, step) if only in (None, name) else gr.update() for name in PLOTS]
    return [visuals.canvas_html(trace, step), *figs, status_line(trace, step, live=only is not None),
            visuals.explain_step(trace, step)]


def replay_views(trace: Optional[Trace], step: Optional[int] = None) -> list:
    """The text as of ``step``, then ``render``'s views: what the step controls show."""
    return ["" if trace is None else visuals.text_at(trace, step), *render(trace, step)]


def status_line(trace: Trace, step: Optional[int] = None, live: bool = False) -> str:
    """``live``: a frame of a streaming run (the decoder may be ahead of the step shown)."""
    records = trace.records if step is None else trace.records[: step + 1]
    if not records:
        return "No steps yet."
    last = records[-1]
    s = trace.stats
    ended = s.finished or s.stopped or bool(s.error)
    state = ("finished" if s.finished else "stopped" if s.stopped
             else f"ended: {visuals.esc(s.error)}" if s.error else "running")
    if live:
        state = "running" if not ended else f"decoded; playing back step {last.step} of {len(trace.records) - 1}"
    elif step is not None and step < len(trace.records) - 1:
        state = f"replaying step {step} of {len(trace.records) - 1}"
    decoded = sum(len(r.decoded) for r in records)
    seconds = sum(r.ms for r in records) / 1000
    cache = f" | cache {s.cache_bytes / 2**20:.1f} MiB" if s.cache_bytes else ""
    return (f"**{state}** | step {last.step} ({last.stage}) | NFE {last.nfe} | decoded {decoded}/{trace.gen_length} "
            f"| tokens fed {sum(r.tokens_fed for r in records)} | {seconds:.2f} s | "
            f"{tokens_per_second(decoded, seconds):.1f} tokens/s{cache}")


def scrubber_for(trace: Optional[Trace], step: Optional[int] = None, live: bool = False):
    """The step slider for ``trace`` at ``step`` (None = last); still during a live run."""
    n = len(trace.records) if trace is not None else 0
    value = max(n - 1, 0) if step is None else step
    return gr.Slider(minimum=0, maximum=max(n - 1, 1), value=value, step=1, interactive=n > 1 and not live)


def allowed_models() -> Optional[list[str]]:
    """``SLOWFAST_ONLY_MODELS`` (comma-separated): the only models a public host loads."""
    only = [m.strip() for m in os.environ.get("SLOWFAST_ONLY_MODELS", "").split(",") if m.strip()]
    return only or None


WEB_WORDS = (  # the loader speaks to the command line; the page names its own controls
    ("--trust-remote-code (load_model(..., trust_remote_code=True))", "the \"Allow the model's own code\" box"),
    ("(--model /path/to/folder)", "(type its path as the model)"), ("(--model embedded)", "(embedded)"),
    ("Pass a local checkpoint folder with --model.", "Type a local checkpoint folder as the model."),
)


def for_the_page(message: str) -> str:
    for cli, page in WEB_WORDS:
        message = message.replace(cli, page)
    return message


def loading_note(model_name: str) -> str:
    """'' or, for a model of a billion parameters or more that is not loaded yet, what it needs."""
    name = (model_name or "").strip()
    if name in POOL.models:
        return ""
    try:
        need = check_memory(name)
    except (ModelLoadError, ValueError):
        return ""
    if need.fits is False or (need.parameters or 0) < 1e9:
        return ""
    return f"Loading **{visuals.esc(name)}** (this takes a while): {visuals.esc(need.message)}."


def load(model_name: str, trust_remote_code: bool = False):
    """The model, or None and a message (the app keeps working with what it has).
    ``trust_remote_code`` (the page's opt-in box) lets a folder's own Python build it."""
    only = allowed_models()
    if only is not None and (model_name or "").strip() not in only:
        return None, f"This host serves only: {', '.join(only)}."
    name = (model_name or "").strip()
    need = None
    if name not in POOL.models:  # say what a big model needs before a long download and load
        try:
            need = check_memory(name)
        except (ModelLoadError, ValueError):
            need = None
        if need is not None and need.fits is False:
            return None, f"Not loaded: {visuals.esc(need.message)}."
    try:
        return POOL.get(model_name, trust_remote_code=bool(trust_remote_code) and only is None), POOL.note
    except (ModelLoadError, ValueError) as exc:
        return None, f"Could not load **{visuals.esc(str(model_name))}**: {visuals.esc(for_the_page(str(exc)))}"


def on_run(model_name: str, prompt, state: dict, *values):
    """Stream a run: the decoder works in a thread; plots re-render every REFRESH_SECONDS.
    ``prompt`` is text or, from the chat box, the conversation so far."""
    outputs_idle = render(state.get("trace"))
    try:
        controls = controls_from(values)
        settings = controls.settings()
    except ValueError as exc:
        yield [f"⚠️ {exc}", "", *outputs_idle, gr.Slider(), gr.Button(interactive=True)]
        return
    pending = loading_note(model_name)
    if pending:  # a big model: say what it needs before the long download and load
        yield [pending, "", *outputs_idle, gr.Slider(), gr.Button(interactive=False)]
    model, note = load(model_name, state.get("trust_remote_code", False))
    if model is None:
        yield [f"⚠️ {note}", "", *outputs_idle, gr.Slider(), gr.Button(interactive=True)]
        return
    if _decode_on_gpu is not None:  # Space: one GPU call, then the whole trace
        try:
            trace = Trace.from_dict(_decode_on_gpu(model_name, prompt, dataclasses.asdict(settings)))
        except ValueError as exc:
            yield [f"⚠️ {exc}", "", *outputs_idle, gr.Slider(), gr.Button(interactive=True)]
            return
        state["trace"] = trace
        yield [note, trace.text, *render(trace), scrubber_for(trace), gr.Button(interactive=True)]
        return
    try:
        job = BackgroundRun(model, prompt, settings)
    except ValueError as exc:
        yield [f"⚠️ {exc}", "", *outputs_idle, gr.Slider(), gr.Button(interactive=True)]
        return
    state["run"] = job.start()
    # "live" until the last frame: a run whose stream ends before it (Stop, a cancelled event)
    # is drawn by on_run_end, the page's next event after it, as far as it was shown
    state.update(live=True, shown=0, stop_note=None)
    live = lambda trace, step: render(trace, step, only=state.get("tab", PLOTS[0]))  # noqa: E731
    try:  # every step is shown, in order, as soon as it exists (stream_steps paces it and keeps
        # the drawing within a tenth of the decoder's time while it decodes)
        for trace, step, views, done in stream_steps(job, live, FRAME_SECONDS, budget=RENDER_BUDGET):
            state["trace"] = trace
            if state.get("stop_note"):  # Stop (an API client's: the page cancels the stream itself)
                yield on_run_end(state)
                return
            message = note if job.error is None else f"⚠️ {visuals.esc(job.error)}"
            if done:
                state["live"] = False
                yield [message, trace.text, *render(trace), scrubber_for(trace), gr.Button(interactive=True)]
            else:
                state["shown"] = step
                yield [message, visuals.text_at(trace, step), *views, scrubber_for(trace, step, live=True),
                       gr.Button(interactive=False)]
    finally:  # the client cancelled or went away (Gradio closes this generator): stop decoding now
        job.stop()


def message_text(content) -> str:
    """A chat message's text (Gradio 6 passes a list of typed parts)."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def on_chat(model_name: str, message: str, history: list, state: dict, *values):
    """One chat turn: the conversation (chat template applied) is the prompt; the answer is
    appended to the chat box when the run ends. The same views stream meanwhile."""
    if not (message or "").strip():
        yield ["Type a message first.", gr.update(), *render(state.get("trace")), gr.Slider(), gr.Button(),
               history, message]
        return
    turns = [{"role": m["role"], "content": message_text(m["content"])} for m in history or []]
    turns.append({"role": "user", "content": message})
    outputs = None
    turn = on_run(model_name, turns, state, *values)
    try:
        for outputs in turn:
            yield [*outputs, turns, ""]
    finally:
        turn.close()  # stops the decoding if this turn was cancelled
    trace = state.get("trace")
    if outputs is not None and trace is not None and trace.prompt == message and trace.stats.finished:
        yield [*outputs, turns + [{"role": "assistant", "content": trace.text}], ""]


STOP_NOTE_SECONDS = 10.0  # how long on_stop and on_run_end share what Stop did


def stopped_note(state: dict) -> Optional[str]:
    """Stop this browser's run after its current forward and say what that did; None when
    nothing runs or streams. The Stop button's own event and the ``on_run_end`` that follows
    the cancelled stream may come in either order: both get the same words."""
    note = state.get("stop_note")
    if note and time.monotonic() - note[0] < STOP_NOTE_SECONDS:
        return note[1]
    job = state.get("run")
    if job is None or (job.done.is_set() and not state.get("live")):
        return None
    job.stop()
    job.wait(5)
    trace = job.trace()
    n = len(trace.records)
    if trace.stats.finished:
        text = f"Stopped the playback: the run had already decoded all its {n} steps"
    else:
        text = f"Stopped: decoding ended after {n} forward{'s' if n != 1 else ''}"
    text += "; the slider, ◀ Step ▶ and ▶ Play show every step." if n > 1 else "."
    state["stop_note"] = (time.monotonic(), text)
    return text


def on_stop(state: dict):
    """Stop this browser's run after its current forward; the Stop button's ``cancels`` end its
    stream and its queued events, and ``on_run_end`` then shows the run as far as it got."""
    return stopped_note(state) or "Nothing is running."


def on_run_end(state: dict) -> list:
    """After a run's (or chat turn's) event, however it ended. A stream that reached its last
    frame drew the finished run: nothing to do. One that Stop ended is drawn here, once its
    frames have stopped coming: the run as far as it was shown, Run enabled. (The stream itself
    ends with this same frame when it sees the Stop first, for an API client; the page may drop
    that frame as it cancels the stream, so this draws it again.)"""
    if not (state.get("live") or state.get("stop_note")):
        return [gr.update()] * (len(VIEW_NAMES) + 4)
    note = stopped_note(state) or "Stopped."
    state["live"] = False
    job = state.get("run")
    trace = state["trace"] = job.trace() if job is not None else state.get("trace")
    if trace is None:
        return [note, *[gr.update()] * (len(VIEW_NAMES) + 2), gr.Button(interactive=True)]
    step = min(int(state.get("shown") or 0), max(len(trace.records) - 1, 0))
    return [note, *replay_views(trace, step), scrubber_for(trace, step), gr.Button(interactive=True)]


def on_scrub(step: int, state: dict) -> list:
    """The views as of the slider's step; a step typed outside the run is clamped to it (and the
    slider says so)."""
    trace = state.get("trace")
    if trace is None or not trace.records:
        return [*replay_views(trace), gr.Slider()]
    last = len(trace.records) - 1
    shown = int(min(max(int(step or 0), 0), last))
    return [*replay_views(trace, shown), gr.Slider(value=shown) if shown != step else gr.update()]


def on_step_by(delta: int, step: int, state: dict) -> list:
    """Previous / next step: the views and the slider move together."""
    trace = state.get("trace")
    if trace is None or not trace.records:
        return [*replay_views(trace), gr.Slider()]
    step = int(min(max(int(step or 0) + delta, 0), len(trace.records) - 1))
    return [*replay_views(trace, step), gr.Slider(value=step)]


def on_play(step: int, state: dict):
    """Play the trace from the slider's step (from the start if at the end), one step a frame."""
    trace = state.get("trace")
    if trace is None or not trace.records:
        yield [*replay_views(trace), gr.Slider()]
        return
    n = len(trace.records)
    start = int(step or 0)
    start = 0 if start >= n - 1 else start
    for s in range(start, n):
        t0 = time.perf_counter()
        yield [*replay_views(trace, s), gr.Slider(value=s)]
        time.sleep(max(0.0, PLAY_SECONDS - (time.perf_counter() - t0)))


def on_compare(model_name: str, prompt: str, configs: list[str], state: dict, *values):
    """Run each configuration in turn (one decoding at a time), saying which one runs; a
    cancelled or abandoned compare stops its current run at once."""
    model, note = load(model_name, state.get("trust_remote_code", False))
    if model is None:
        yield f"⚠️ {note}", None, None
        return
    if not configs:
        yield "Pick at least one configuration.", None, None
        return
    base = controls_from(values)
    jobs, labels = [], []
    for label in configs:  # every configuration is checked before anything decodes
        c = dataclasses.replace(base, sampler=label.split(" ")[0], cache=label.endswith("cache"))
        try:
            jobs.append(BackgroundRun(model, prompt, c.settings(), label=label))
        except ValueError as exc:
            yield f"⚠️ {label}: {exc}", None, None
            return
        labels.append(label)
    if _decode_on_gpu is not None:  # Space: each configuration is one GPU call
        traces = []
        for i, (label, job) in enumerate(zip(labels, jobs)):
            yield f"Running **{label}** ({i + 1} of {len(jobs)})…", gr.update(), gr.update()
            traces.append(Trace.from_dict(_decode_on_gpu(model_name, prompt, dataclasses.asdict(job.run.settings))))
        jobs = [None] * len(traces)
    current = None
    state.update(compare_live=(0, len(jobs)), stop_note=None)  # until its table: see on_compare_end
    try:
        for i, (label, job) in enumerate(zip(labels, jobs)):
            if job is None:
                break
            current = state["run"] = job.start()
            yield f"Running **{label}** ({i + 1} of {len(jobs)})…", gr.update(), gr.update()
            while not job.wait(REFRESH_SECONDS):
                pass
            state["compare_live"] = (i + 1, len(jobs))
            if state.get("stop_note"):  # an API client's Stop (the page cancels the event itself)
                yield on_compare_end(state)
                return
    finally:
        if current is not None:
            current.stop()
    state["compare_live"] = None
    if _decode_on_gpu is None:
        traces = [job.trace() for job in jobs]
    rows = visuals.compare_table(traces, labels)
    table = [[r["label"], "—" if r["correct"] is None else "yes" if r["correct"] else "no", r["nfe"],
              f"{r['speedup_nfe']:.2f}x", r["tokens_fed"], f"{r['speedup_tokens']:.2f}x",
              round(r["seconds"], 3), f"{r['speedup']:.2f}x", "yes" if r["same_text"] else "no", r["text"]]
             for r in rows]
    state["compare"] = traces
    task = rows[0]["task"] if rows else None
    scored = (f" The prompt is a **{task}** problem: \"correct\" is its scorer's verdict "
              f"({TASKS[task].primary_metric.replace('_', ' ')})." if task else
              " \"correct\" is shown when the prompt is one of the embedded tasks' (arithmetic, story, copy).")
    yield (f"Compared {len(traces)} runs on the same prompt and seed.{scored}", table,
           visuals.compare_heatmaps(traces, labels))


def on_compare_end(state: dict) -> list:
    """After a compare's event: one stopped before its table says so (a finished one: nothing;
    as on_run_end, the stream's own last frame and this one may both come)."""
    progress = state.get("compare_live")
    if not progress:
        return [gr.update()] * 3
    stopped_note(state)
    done, total = progress
    return [f"Stopped: {done} of {total} configurations had run; press **Compare** to compare them again.",
            gr.update(), gr.update()]


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


def on_export(state: dict):
    trace = state.get("trace")
    if trace is None:
        return "Run or replay something first.", None
    if state.get("export_dir"):  # one export folder per browser session, replaced each time
        shutil.rmtree(state["export_dir"], ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix="slowfast-export-"))
    state["export_dir"] = str(folder)
    trace_path = trace.save(folder / "trace.json")
    figs = {name: fn(trace) for name, fn in visuals.ALL_FIGURES.items()}
    html_path = folder / "figures.html"
    html_path.write_text(visuals.figures_html(figs, f"SlowFast Explorer: {trace.settings.get('sampler')} run",
                                              visuals.run_header(trace)), encoding="utf-8")
    return f"Exported {len(trace.records)} steps.", [str(trace_path), str(html_path)]


def on_replay(file, state: dict):
    keep = [gr.update()] * (2 + len(CONTROL_NAMES))
    if file is None:
        return ["", "", *render(state.get("trace")), gr.Slider(), *keep]
    path = file if isinstance(file, str) else getattr(file, "name", file)
    try:
        trace = Trace.load(path)  # checked in full and size-capped before anything renders
    except (ValueError, OSError) as exc:
        return [f"⚠️ Not a trace file: {visuals.esc(str(exc))}", "", *render(state.get("trace")), gr.Slider(), *keep]
    finally:
        forget_upload(path)
    state["trace"] = trace
    values = preset_controls({"settings": trace.settings})
    return [f"Replaying a trace of **{visuals.esc(trace.model)}** ({trace.settings['sampler']}, "
            f"{len(trace.records)} steps); no model needed. The prompt, model and every control are as in "
            "that run: Run decodes it again.", trace.text, *render(trace), scrubber_for(trace),
            gr.update(value=trace.prompt), gr.update(value=trace.model),
            *[gr.update(value=values[n]) if n in values else gr.update() for n in CONTROL_NAMES]]


def forget_upload(path) -> None:
    """Delete an uploaded file once read (only files in Gradio's upload folder)."""
    try:
        p = Path(str(path)).resolve()
        if p.is_file() and p.is_relative_to(Path(gr.utils.get_upload_folder()).resolve()):
            p.unlink()
    except OSError:
        pass


def on_preset(name: str):
    preset = PRESETS.get(name)
    if preset is None:
        return [gr.update()] * (len(CONTROL_NAMES) + 2)
    values = preset_controls(preset)
    updates = [gr.update(value=values[n]) if n in values else gr.update() for n in CONTROL_NAMES]
    explanation = f"**{preset['name']}**: {preset.get('description', '')}"
    if preset.get("explanation"):
        explanation += f"\n\n*What to look for:* {preset['explanation']}"
    prompt = gr.update(value=preset["prompt"]) if preset.get("prompt") else gr.update()
    return [*updates, prompt, explanation]


VARIANT_CONTROLS = ("exploration_steps", "horizon_threshold", "stability_window", "std_threshold",
                    "high_confidence_threshold", "slow_confidence_threshold", "max_cycles")


def on_variant(variant: str):
    """A variant's defaults into its sliders (unset ones at the sliders' "default" 0)."""
    d = VARIANT_DEFAULTS[variant]
    return [d.get(n) or 0 if n in ("slow_confidence_threshold", "max_cycles") else d[n] for n in VARIANT_CONTROLS]


def model_choices(default_model: str) -> list:
    """The picker's entries: (name, size, memory, cache) for the models we know."""
    out = [("embedded · 5M · runs offline on a CPU", "embedded")]
    for name, info in KNOWN_MODELS.items():
        size = f"{info.parameters / 1e9:.1f}B" if info.parameters >= 1e9 else f"{info.parameters / 1e6:.0f}M"
        out.append((f"{name} · {size} · {info.weight_bytes('bfloat16') / 1e9:.0f} GB bf16 / "
                    f"{info.weight_bytes('float32') / 1e9:.0f} GB fp32 · cache {'yes' if info.cache else 'no'}", name))
    if default_model not in [v for _, v in out]:
        out.insert(0, (default_model, default_model))
    return out


def on_check(model_name: str, prompt: str, *values) -> str:
    model = POOL.models.get((model_name or "").strip())  # never loads on a keystroke
    try:
        message = check_controls(controls_from(values), model, prompt if model is not None else None)
    except (TypeError, ValueError) as exc:
        message = str(exc)
    return f"⚠️ {message}" if message else "✓ Settings are valid."


SHOW_THE_RUN_ON_A_PHONE = ("() => { if (window.innerWidth < 700) "
                           "document.querySelector('#message')?.scrollIntoView({behavior: 'smooth'}); }")

CSS = """
#explain { font-size: 0.92em; }
#playback button { min-width: 0; }
"""


def resolve_local(model_name: str) -> Optional[Path]:
    """The local folder of ``model_name`` without downloading (None for a hub id)."""
    name = (model_name or "").strip()
    if name == "embedded":
        return EMBEDDED_DIR
    folder = Path(name).expanduser()
    return folder if name and folder.is_dir() else None


def chat_template_of(model_name: str) -> Optional[bool]:
    """Whether a model has a chat template, as far as we know without loading it (None: unknown)."""
    model = POOL.models.get((model_name or "").strip())
    if model is not None:
        return model.has_chat_template
    folder = resolve_local(model_name)
    if folder is None:
        return None
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return None


def on_model_change(model_name: str):
    """The chat box and the template checkbox follow the model: shown where it has a template."""
    has = chat_template_of(model_name)
    if has is False:
        return (gr.Checkbox(value=False, interactive=False, info="this model has no chat template: the prompt "
                                                                  "is fed as plain text"),
                gr.Accordion(visible=False))
    return gr.Checkbox(value=True, interactive=True, info="wrap the prompt in the tokenizer's chat template"), \
        gr.Accordion(visible=True)


def build_app(default_model: str = "embedded") -> gr.Blocks:
    d = Controls()
    examples = example_prompts()
    has_chat = chat_template_of(default_model)
    # Gradio's own temporary files (uploads, downloads) are deleted an hour after they were made
    with gr.Blocks(title="SlowFast Explorer", delete_cache=(600, 3600)) as demo:
        gr.Markdown("# SlowFast Explorer\nWatch a diffusion LLM unmask its answer step by step, and see what "
                    "[SlowFast sampling](https://arxiv.org/abs/2506.10848), Fast-dLLM's threshold and dLLM-Cache "
                    "change. Pick a preset or type a prompt, press **Run**, then step through the run.")
        with gr.Row():
            with gr.Column(scale=1, min_width=340):
                model = gr.Dropdown(model_choices(default_model), value=default_model, allow_custom_value=True,
                                    label="Model", info="hub ids download once (a model too big for this machine is "
                                                        "refused with what it needs); or type a local folder")
                trust = gr.Checkbox(False, label="Allow the model's own code (trust_remote_code)",
                                    visible=allowed_models() is None,
                                    info="⚠️ only for a folder or hub id you trust: its Python runs on this "
                                         "machine. Off: such models are refused with a message.")
                prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt", lines=2, elem_id="prompt")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                check = gr.Markdown(elem_id="check")
                c: dict[str, Any] = {}
                c["sampler"] = gr.Radio(["baseline", "slowfast", "threshold", "dream"], value=d.sampler,
                                        label="Sampler", elem_id="sampler",
                                        info="LLaDA baseline, SlowFast (Wei et al. 2025), Fast-dLLM threshold, "
                                             "Dream's own decoding")
                c["cache"] = gr.Checkbox(d.cache, label="dLLM-Cache (feature reuse)")
                preset = gr.Dropdown(list(PRESETS), value=None, label="Preset", elem_id="preset",
                                     info="paper settings and teaching scenarios; choosing one fills the controls")
                explanation = gr.Markdown()
                example = gr.Dropdown(list(examples), value=None, label="Example prompt")
                c["chat"] = gr.Checkbox(d.chat if has_chat is not False else False, label="Apply the chat template",
                                        interactive=has_chat is not False,
                                        info="this model has no chat template: the prompt is fed as plain text"
                                        if has_chat is False else "wrap the prompt in the tokenizer's chat template")
                with gr.Accordion("Chat (instruct models)", open=False, visible=has_chat is not False) as chat_box:
                    chatbot = gr.Chatbot(label="Conversation", height=240)
                    chat_msg = gr.Textbox(label="Message", placeholder="Ask the instruct model; Enter sends")
                    with gr.Row():
                        chat_send = gr.Button("Send")
                        chat_clear = gr.Button("Clear")
                with gr.Accordion("Generation", open=False):
                    c["gen_length"] = gr.Slider(8, 1024, d.gen_length, step=8, label="Generation length",
                                                info="gen_length: positions to generate")
                    c["block_length"] = gr.Slider(8, 1024, d.block_length, step=8, label="Block length",
                                                  info="block_length: semi-autoregressive blocks, left to right")
                    c["steps"] = gr.Slider(1, 1024, d.steps, step=1, label="Steps (baseline)",
                                           info="steps: forwards in all, a multiple of the number of blocks")
                    c["temperature"] = gr.Slider(0, 2, d.temperature, step=0.05, label="Temperature",
                                                 info="0 = greedy; > 0 Gumbel noise in float64")
                    c["seed"] = gr.Number(d.seed, precision=0, label="Seed", info="0 .. 2^63-1")
                    c["cfg_scale"] = gr.Slider(0, 5, d.cfg_scale, step=0.1, label="CFG scale",
                                               info="cfg_scale: classifier-free guidance (0 = off)")
                    c["max_forwards_per_block"] = gr.Slider(
                        0, 4096, d.max_forwards_per_block, step=1, label="Forward cap per block (0 = default)",
                        info="max_forwards_per_block: a run that needs more ends with a message "
                             "(default 2 x block_length + 16)")
                with gr.Accordion("SlowFast", open=True):
                    c["variant"] = gr.Radio(list(VARIANT_DEFAULTS), value=d.variant, label="Variant",
                                            info="reference = the published code; paper = the paper's text")
                    c["exploration_steps"] = gr.Slider(1, 16, d.exploration_steps, step=1,
                                                       label="Exploration steps (slow stage)",
                                                       elem_id="exploration-steps",
                                                       info="k_exploration_steps / K_max: forwards per slow stage")
                    c["horizon_threshold"] = gr.Slider(0, 1, d.horizon_threshold, step=0.01,
                                                       label="Horizon confidence threshold",
                                                       info="cycle_len_confidence_threshold / tau_min_conf: certainty "
                                                            "a masked position needs to extend the span")
                    c["stability_window"] = gr.Slider(1, 8, d.stability_window, step=1, label="Stability window",
                                                      info="cycle_length_stability_window / W_hist: horizon "
                                                           "estimates compared for convergence")
                    c["std_threshold"] = gr.Slider(0, 5, d.std_threshold, step=0.1, label="Stability threshold",
                                                   info="cycle_length_stability_std_dev_threshold: the span "
                                                        "freezes when the spread falls below it")
                    c["high_confidence_threshold"] = gr.Slider(0, 1, d.high_confidence_threshold, step=0.01,
                                                               label="High-confidence threshold",
                                                               info="high_confidence_threshold / tau_high_conf: "
                                                                    "decode all above it if at least two")
                    c["slow_confidence_threshold"] = gr.Slider(
                        0, 1, d.slow_confidence_threshold, step=0.01, label="Slow-stage threshold (0 = high-confidence)",
                        info="high_conf_for_parallel_decode_discovery: the slow stage's parallel decode (dream 0.8)")
                    c["max_cycles"] = gr.Slider(0, 4096, d.max_cycles, step=1, label="Cycle cap per block (0 = default)",
                                                info="max_sub_cycles_per_block: a block that needs more slow/fast "
                                                     "cycles ends the run with a message (256; dream 4096)")
                    c["stop_when_full"] = gr.Checkbox(d.stop_when_full, label="Stop a slow stage when the block is full",
                                                      info="ours, off in the published code: skips slow-stage "
                                                           "forwards that can decode nothing")
                with gr.Accordion("Baseline", open=False):
                    c["remasking"] = gr.Radio(["low_confidence", "random"], value=d.remasking, label="Remasking",
                                              info="remasking: which positions each step unmasks")
                with gr.Accordion("Threshold (Fast-dLLM)", open=False):
                    c["threshold"] = gr.Slider(0, 1, d.threshold, step=0.01, label="Confidence threshold",
                                               info="threshold: unmask every masked position above it (at least 1)")
                    c["factor"] = gr.Slider(0, 4, d.factor, step=0.1, label="Factor (0 = off)",
                                            info="factor: unmask the largest n with c(n) >= 1 - factor/(n+1)")
                with gr.Accordion("Dream's decoding", open=False):
                    c["alg"] = gr.Radio(["entropy", "maskgit_plus", "topk_margin", "origin"], value=d.alg,
                                        label="Confidence (alg)", info="negative entropy, top-1 probability, "
                                                                       "top1 - top2 margin, or random (origin)")
                    c["alg_temp"] = gr.Slider(0, 2, d.alg_temp, step=0.05, label="Position temperature (alg_temp)",
                                              info="0 = the most confident positions; > 0 sample positions")
                    c["eps"] = gr.Slider(0.0001, 0.1, d.eps, step=0.0001, label="Schedule end (eps)",
                                         info="the timestep schedule runs from 1 to eps over `steps` forwards")
                    c["top_p"] = gr.Slider(0.01, 1, d.top_p, step=0.01, label="top_p (1 = off)")
                    c["top_k"] = gr.Slider(0, 200, d.top_k, step=1, label="top_k (0 = off)")
                with gr.Accordion("dLLM-Cache", open=False):
                    c["kp"] = gr.Slider(1, 500, d.kp, step=1, label="Prompt refresh interval K_p",
                                        info="prompt_interval_steps: prompt features recomputed every K_p forwards")
                    c["kr"] = gr.Slider(1, 100, d.kr, step=1, label="Response refresh interval K_r",
                                        info="gen_interval_steps: response features recomputed every K_r forwards")
                    c["rho"] = gr.Slider(0, 1, d.rho, step=0.05, label="V-verify ratio rho",
                                         info="transfer_ratio: share of response rows recomputed in between")
                    c["refresh_first_layer"] = gr.Checkbox(d.refresh_first_layer, label="Always refresh layer 0")
                    gr.Markdown("Paper settings: " + ", ".join(
                        f"`{k}` K_p={v['kp']} K_r={v['kr']} rho={v['rho']}" for k, v in CACHE_PRESETS.items()))
            with gr.Column(scale=2):
                message = gr.Markdown(elem_id="message")
                status = gr.Markdown(elem_id="status")
                text = gr.Textbox(label="Text", lines=2, interactive=False, elem_id="text")
                canvas = gr.HTML(elem_id="canvas")
                with gr.Row(elem_id="playback", equal_height=False):
                    prev_btn = gr.Button("◀ Step", size="sm", scale=0, min_width=70, elem_id="prev")
                    play_btn = gr.Button("▶ Play", size="sm", scale=0, min_width=70, elem_id="play")
                    next_btn = gr.Button("Step ▶", size="sm", scale=0, min_width=70, elem_id="next")
                    scrubber = gr.Slider(0, 1, 0, step=1, label="Step", interactive=False, elem_id="scrubber",
                                         info="after a run: any step's canvas, plots and explanation", scale=4)
                explain = gr.Markdown(visuals.explain_step(None), elem_id="explain")
                with gr.Tabs():
                    plot_tabs, plots = [], []
                    for label, elem in (("Certainty", "heatmap"), ("Stages", "stages"), ("Convergence", "convergence"),
                                        ("Cache", "cache"), ("Speed", "speed")):
                        with gr.Tab(label) as tab:
                            plots.append(gr.Plot(elem_id=elem, show_label=False))
                        plot_tabs.append(tab)
                    heat, stages, conv, cache_plot, speed = plots
                with gr.Tab("Compare"):
                    configs = gr.CheckboxGroup(COMPARE_CONFIGS, value=["baseline", "slowfast", "slowfast + cache"],
                                               label="Configurations (same prompt, seed and sliders; the first is "
                                                     "the reference for the speedups)")
                    compare_btn = gr.Button("Compare", elem_id="compare")
                    compare_msg = gr.Markdown()
                    compare_table = gr.Dataframe(
                        headers=["config", "correct", "NFE", "speedup by NFE", "tokens fed", "speedup by tokens fed",
                                 "seconds (this machine)", "speedup by time", "same text as the first", "text"],
                        interactive=False, elem_id="compare-table")
                    gr.Markdown("NFE and tokens fed are exact and repeatable; seconds are one measurement on this "
                                "machine (shared, so they vary between runs). With the cache, SlowFast's truncated "
                                "fast forwards also recompute cached rows, so it can need more forwards to converge.")
                    compare_plot = gr.Plot(show_label=False)
                with gr.Tab("Tune"):
                    gr.Markdown("A random search over SlowFast's and the threshold sampler's parameters (and "
                                "the cache's, on models that have one), each point scored on held-out task "
                                "prompts for accuracy and NFE; the baseline at one token per forward is the "
                                "reference. `python -m slowfast sweep` runs larger ones.")
                    with gr.Row():
                        tune_task = gr.Dropdown(TASK_NAMES, value=TASK_NAMES[0] if TASK_NAMES else None,
                                                label="Task", elem_id="tune-task")
                        tune_count = gr.Slider(*TUNE_COUNT, 4, step=1, label="Prompts per setting", elem_id="tune-count")
                        tune_points = gr.Slider(*TUNE_POINTS, 6, step=1, label="Random settings", elem_id="tune-points")
                        tune_seed = gr.Number(0, precision=0, label="Seed")
                    tune_btn = gr.Button("Sweep", elem_id="tune")
                    tune_msg = gr.Markdown(elem_id="tune-msg")
                    tune_plot = gr.Plot(show_label=False, elem_id="tune-plot")
                    tune_table = gr.Dataframe(headers=["accuracy", "NFE", "tokens fed", "setting"],
                                              interactive=False, elem_id="tune-table", wrap=True,
                                              column_widths=["11%", "9%", "12%", "68%"])
                with gr.Tab("Export / replay"):
                    export_btn = gr.Button("Export trace and figures")
                    export_msg = gr.Markdown()
                    export_files = gr.File(label="Downloads", file_count="multiple")
                    upload = gr.File(label="Replay a trace file (no model needed; restores the prompt and controls)",
                                     file_types=[".json"], type="filepath", elem_id="upload")

        controls = [c[n] for n in CONTROL_NAMES]
        views = [canvas, heat, stages, conv, cache_plot, speed, status, explain]
        hidden = dict(api_visibility="undocumented")  # the page's own wiring, not an API
        # the API: /run, /stop, /compare, /replay, /chat with the settings' own parameter names
        queue_note = queue_note_for(demo)  # said at once when the device is busy
        run_btn.click(queue_note, None, [message], queue=False, **hidden)
        # on a phone the views sit below every control: bring the run into view as it starts
        run_btn.click(None, None, None, js=SHOW_THE_RUN_ON_A_PHONE, **hidden)
        compare_btn.click(queue_note, None, [compare_msg], queue=False, **hidden)
        run_event = run_btn.click(named(on_run, "model", "prompt", "state", *CONTROL_NAMES, device=True),
                                  [model, prompt, *controls], [message, text, *views, scrubber, run_btn],
                                  api_name="run", concurrency_id="device", concurrency_limit=1)
        chat_events = [
            trigger(named(on_chat, "model", "message", "history", "state", *CONTROL_NAMES, device=True),
                    [model, chat_msg, chatbot, *controls], [message, text, *views, scrubber, run_btn, chatbot, chat_msg],
                    concurrency_id="device", **(dict(api_name="chat") if i == 0 else hidden))
            for i, trigger in enumerate((chat_send.click, chat_msg.submit))]
        compare_event = compare_btn.click(named(on_compare, "model", "prompt", "configs", "state", *CONTROL_NAMES,
                                                device=True),
                                          [model, prompt, configs, *controls],
                                          [compare_msg, compare_table, compare_plot],
                                          api_name="compare", concurrency_id="device")
        # Stop ends this browser's running decode after its current forward and cancels
        # its queued ones (Gradio closes their generators, which stops their runs too)
        stop_btn.click(named(on_stop, "state"), None, [message], api_name="stop",
                       queue=False, cancels=[run_event, compare_event, *chat_events])
        # after each run or chat turn (a cancelled one too: the page runs it once the stream is
        # gone): a stopped run drawn as far as it got, Run enabled
        for event in (run_event, *chat_events):
            event.then(named(on_run_end, "state"), None, [message, text, *views, scrubber, run_btn],
                       queue=False, **hidden)
        compare_event.then(named(on_compare_end, "state"), None, [compare_msg, compare_table, compare_plot],
                           queue=False, **hidden)
        chat_clear.click(lambda: [], None, [chatbot], queue=False, **hidden)
        # walking through a finished trace needs no device: every browser may do it at once
        free = dict(hidden, concurrency_limit=None)
        scrub = named(on_scrub, "step", "state")
        scrubber.release(scrub, [scrubber], [text, *views, scrubber], **free)
        scrubber.input(scrub, [scrubber], [text, *views, scrubber], trigger_mode="always_last", **free)  # keys, drags
        prev_btn.click(named(lambda st, step: on_step_by(-1, step, st), "state", "step"), [scrubber],
                       [text, *views, scrubber], **free)
        next_btn.click(named(lambda st, step: on_step_by(1, step, st), "state", "step"), [scrubber],
                       [text, *views, scrubber], **free)
        play_event = play_btn.click(named(on_play, "step", "state"), [scrubber], [text, *views, scrubber],
                                    **free)
        for b in (prev_btn, next_btn, run_btn):
            b.click(None, None, None, cancels=[play_event], **hidden)
        export_btn.click(named(on_export, "state"), None, [export_msg, export_files], **hidden)
        tune_btn.click(named(on_tune, "model", "task", "count", "points", "seed", "state", device=True),
                       [model, tune_task, tune_count, tune_points, tune_seed], [tune_msg, tune_plot, tune_table],
                       api_name="tune", concurrency_id="device")
        tune_table.select(on_tune_select, [prompt], [tune_msg, prompt, *controls], **hidden)
        upload.upload(named(on_replay, "trace_file", "state"), [upload],
                      [message, text, *views, scrubber, prompt, model, *controls], api_name="replay")
        for tab, name in zip(plot_tabs, PLOTS):  # a live run redraws only the visible plot
            tab.select(named(lambda st, name=name: st.update(tab=name), "state"), None, None, queue=False, **hidden)
        preset.change(on_preset, [preset], [*controls, prompt, explanation], **hidden)
        example.change(lambda k: examples.get(k, gr.update()), [example], [prompt], **hidden)
        c["variant"].input(on_variant, [c["variant"]], [c[n] for n in VARIANT_CONTROLS], **hidden)
        model.change(on_model_change, [model], [c["chat"], chat_box], queue=False, **hidden)
        trust.change(named(lambda st, on: st.update(trust_remote_code=bool(on)), "state", "trust_remote_code"),
                     [trust], None, queue=False, **hidden)
        gr.on([x.change for x in controls] + [prompt.change, model.change], on_check,
              [model, prompt, *controls], [check], queue=False, **hidden)
        demo.unload(on_unload)
        demo.controls = c  # every control by its setting name (tests check them against params.py)
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """Serve ``demo`` with the limits a public host needs (see the README's SECURITY)."""
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    kwargs.setdefault("show_error", True)  # Gradio's own input checks say what is wrong, not a bare "Error"
    return demo.launch(max_file_size=MAX_UPLOAD, css=CSS, **kwargs)


if __name__ == "__main__":
    launch(build_app(os.environ.get("SLOWFAST_MODEL", "embedded")))
