"""Run, chat and Stop: a run streams into the browser's player as per-step deltas."""
from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Optional

import gradio as gr

import visuals
from slowfast.session import BackgroundRun, stream_batches
from slowfast.tasks import verdict
from slowfast.trace import Trace
from visuals.player import PlayerStream, dumps, status_numbers, whole_run
from explorer.controls import chat_refusal, chat_turns, controls_from
from explorer import sessions
from explorer.sessions import begin_work, load, loading_note, prompt_refusal


STREAM_SECONDS = 0.05  # a live run sends its new steps at most this often (the browser draws every one)
RENDER_BUDGET = 0.05  # while a run decodes, computing and sending steps may take at most this share of its time


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def verdict_of(trace: Trace) -> Optional[dict]:
    """The task's verdict on a finished run whose prompt is in a task's format (None otherwise)."""
    if not (trace.stats.finished and isinstance(trace.prompt, str)):
        return None
    found = verdict(trace.prompt, trace.text)
    return None if found is None else dataclasses.asdict(found)


def run_message(trace: Trace, note: str = "", label: str = "", slot: int = 0) -> str:
    """A whole run for the player (replay, a Space's finished run)."""
    return dumps(whole_run(trace, new_run_id(), note, verdict_of(trace), slot=slot, label=label))


def idle(message: str, busy: bool = False) -> list:
    """A message with the player as it is: Run enabled unless ``busy``."""
    return [message, gr.update(), gr.update(), gr.update(), gr.Button(interactive=not busy)]


def result(trace: Trace) -> list:
    """What an API client reads when a run ends: the text and the status line (the page's
    player shows both itself; these two outputs are hidden)."""
    s = trace.stats
    state = ("finished (stopped in forwards that decode nothing)" if s.finished and s.stopped else "finished"
             if s.finished else "stopped" if s.stopped else f"ended: {s.error}" if s.error else "stopped")
    line = status_numbers(trace, len(trace.records) - 1) if trace.records else "no steps"
    return [trace.text, f"{state} | {line}"]


def on_run(model_name: str, prompt, state: dict, *values):
    """Stream a run into the browser's player: the decoder works in a thread and every new step
    goes out as a small delta (the browser draws each one and keeps the run for scrubbing).
    ``prompt`` is text or, from the chat box, the conversation so far."""
    work = begin_work(state)  # Stop finds this event here, whatever it is doing
    try:
        yield from run_frames(model_name, prompt, state, work, values)
    finally:
        work.finish()


def run_frames(model_name: str, prompt, state: dict, work, values: tuple):
    refusal = prompt_refusal(prompt, model_name)  # before anything else: a 10 MB prompt is refused in microseconds
    if refusal is not None:
        yield idle(f"⚠️ {visuals.esc(refusal)}")
        return
    try:
        controls = controls_from(values)
        settings = controls.settings()
    except (ValueError, TypeError, OverflowError) as exc:
        yield idle(f"⚠️ {visuals.esc(str(exc))}")
        return
    pending = loading_note(model_name)
    if pending:  # a big model: say what it needs before the long download and load
        yield idle(pending, busy=True)
    model, note = load(model_name, state.get("trust_remote_code", False))
    if model is None:
        yield idle(f"⚠️ {note}")
        return
    if sessions.decode_on_gpu is not None:  # Space: one GPU call, then the whole trace
        try:
            trace = Trace.from_dict(sessions.decode_on_gpu(model_name, prompt, dataclasses.asdict(settings)))
        except ValueError as exc:
            yield idle(f"⚠️ {visuals.esc(str(exc))}")
            return
        state["trace"] = trace
        yield [note, result(trace)[0], run_message(trace), result(trace)[1], gr.Button(interactive=True)]
        return
    try:
        job = BackgroundRun(model, prompt, settings)  # tokenizes and checks the prompt's tokens: nothing decodes yet
    except (ValueError, TypeError) as exc:
        yield idle(f"⚠️ {visuals.esc(str(exc))}")
        return
    if not work.hold(job):  # Stop came while the model loaded
        yield idle("Stopped before the run started.")
        return
    stream = PlayerStream(new_run_id())
    state["run"] = job.start()
    # "live" until the last message: a run whose stream ends before it (Stop, a cancelled event)
    # is finished by on_run_end, the page's next event after it
    state.update(live=True, stream=stream, stop_note=None)
    try:
        for trace, done in stream_batches(job, STREAM_SECONDS, budget=RENDER_BUDGET):
            state["trace"] = trace
            if work.stopped or state.get("stop_note"):  # Stop (an API client's: the page cancels the stream itself)
                yield on_run_end(state)
                return
            message = note if job.error is None else f"⚠️ {visuals.esc(job.error)}"
            if done:
                state["live"] = False
                text, status = result(trace)
                yield [message, text, dumps(stream.end(trace, verdict=verdict_of(trace))), status,
                       gr.Button(interactive=True)]
            else:
                update = stream.update(trace)
                if update is not None:
                    yield [message, gr.update(), dumps(update), gr.update(), gr.Button(interactive=False)]
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
    if (refusal := chat_refusal(model_name)) is not None:  # the API's /chat too, not only the page's hidden box
        yield [*idle(f"⚠️ {refusal}"), history, message]
        return
    if not (message or "").strip():
        yield [*idle("Type a message first."), history, message]
        return
    turns = [{"role": m["role"], "content": message_text(m["content"])} for m in history or []]
    turns.append({"role": "user", "content": message})
    outputs = None
    turn = on_run(model_name, chat_turns(model_name, turns), state, *values)
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
    """Stop this browser's device event (its decoding after the current forward; nothing further
    starts: no next configuration of a compare, no next setting of Tune) and say what that did;
    None when nothing was under way. The Stop button's own event and the ``on_run_end`` that
    follows the cancelled stream may come in either order: both get the same words."""
    note = state.get("stop_note")
    if note and time.monotonic() - note[0] < STOP_NOTE_SECONDS:
        return note[1]
    work = sessions.stop_work(state)  # None: no device event under way
    if work is not None:
        job = work.current
    else:  # a run whose stream Stop ended before its last message (on_run_end's call)
        job = state.get("run") if state.get("live") else None
        if job is None:
            return None
    if job is None or not hasattr(job, "trace"):  # a run not started yet, or Tune scoring a setting
        text = ("Stopped before the run started." if work.what == "run" else
                f"Stopped: no further {work.what} starts.")
    else:
        job.stop()
        job.wait(5)
        text = run_stopped_note(job.trace(), between=work is not None and work.what == "configuration")
    state["stop_note"] = (time.monotonic(), text)
    return text


def run_stopped_note(trace: Trace, between: bool = False) -> str:
    """What Stop did to a run (``between``: it is a compare's configuration, so a finished one
    means the Stop landed between two configurations)."""
    n, s = len(trace.records), trace.stats
    forwards = f"{n} forward{'s' if n != 1 else ''}"
    if s.finished and not s.stopped and between:
        return "Stopped between two configurations: the next one does not start."
    if s.finished and not s.stopped:
        text = f"Stopped: the run had already decoded all its {n} steps"
    elif s.finished:  # stopped while it ran forwards that decode nothing (a slow stage's last explorations)
        text = (f"Stopped after {forwards}: every position was already decoded; the forwards left in its "
                "schedule, which decode nothing, did not run")
    else:
        text = f"Stopped: decoding ended after {forwards}"
    return text + ("; the slider, ◀ Step ▶ and ▶ Play show every step." if n > 1 else ".")


def playback_note(playback: str) -> Optional[str]:
    """What Stop did to the browser's player (``playback``: "step/last" of a playback it paused)."""
    try:
        step, last = (int(x) for x in (playback or "").split("/"))
    except ValueError:
        return None
    return f"Stopped the playback at step {step} of {last}; ◀ Step ▶, the slider and ▶ Play go on from there."


def on_stop(state: dict, playback: Optional[str] = None):
    """Stop this browser's decoding after its current forward (the Stop button's ``cancels`` end
    its stream and its queued events; ``on_run_end`` then sends the run as far as it got) and
    say so; the page's own player pauses in the browser at once (``playback``)."""
    return stopped_note(state) or playback_note(playback) or "Nothing is running."


def on_run_end(state: dict) -> list:
    """After a run's (or chat turn's) event, however it ended. A stream that reached its last
    message sent the finished run: nothing to do. One that Stop ended is finished here: the
    steps not sent yet and the end, Run enabled (the player stays at the step on screen). (The
    stream itself ends with this same message when it sees the Stop first, for an API client;
    the page may drop that message as it cancels the stream, so this sends it again.)"""
    if not (state.get("live") or state.get("stop_note")):
        return [gr.update()] * 5
    note = stopped_note(state) or "Stopped."
    state["live"] = False
    job = state.get("run")
    trace = state["trace"] = job.trace() if job is not None else state.get("trace")
    stream = state.get("stream")
    if trace is None or stream is None:
        return [note, gr.update(), gr.update(), gr.update(), gr.Button(interactive=True)]
    text, status = result(trace)
    return [note, text, dumps(stream.end(trace, note=visuals.esc(note))), status, gr.Button(interactive=True)]
