"""Run, chat, Stop and the step controls."""
from __future__ import annotations

import dataclasses
import time
from typing import Optional

import gradio as gr

import visuals
from slowfast.session import BackgroundRun, stream_steps
from slowfast.trace import Trace, tokens_per_second
from explorer.controls import controls_from
from explorer import sessions
from explorer.sessions import load, loading_note


FRAME_SECONDS = 0.08  # a live run shows each step for at least this long (stream_steps)
RENDER_BUDGET = 0.05  # while a run decodes, drawing may take at most this share of its time (bench render)
PLAY_SECONDS = 0.35  # Play shows each step this long
PLOTS = ["certainty_heatmap", "stage_timeline", "convergence", "cache_hits", "speed"]
VIEW_NAMES = ["canvas", *PLOTS, "status", "explain"]  # what render() returns, in order


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
    if sessions.decode_on_gpu is not None:  # Space: one GPU call, then the whole trace
        try:
            trace = Trace.from_dict(sessions.decode_on_gpu(model_name, prompt, dataclasses.asdict(settings)))
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
