"""Gradio adapters: handlers wired with named parameters and this browser's session, streams
that stop their runs however they end, and a slider check that leaves range errors to our
messages."""
from __future__ import annotations

import asyncio
import inspect
import math
import threading
import time
from typing import Any, Optional

import anyio
import gradio as gr

from explorer.sessions import DEVICE, SESSIONS


def _number_value(self: gr.Number, payload: Any) -> Any:
    """gr.Slider's and gr.Number's preprocess without their bounds check, and a value that is
    not a finite number passed on as it came (see below)."""
    if isinstance(payload, bool) or not isinstance(payload, (int, float)) or (
            isinstance(payload, float) and not math.isfinite(payload)):
        return payload
    return gr.Number.round_to_precision(payload, self.precision)


def _as_sent(self: gr.components.Component, payload: Any) -> Any:
    """A choice control's preprocess that passes the value on as it came (see below)."""
    return payload


# A number typed into a slider's box reaches the handler even outside the slider's range: the
# settings check then says what is allowed, Tune refuses it and the step slider clamps it
# (Gradio's own bounds check answers a bare "Error" on every output). So do an API client's
# values that Gradio's own preprocessing would turn into an exception or its own words (text or
# infinity for a number box's integer: a TypeError or OverflowError; a sampler or configuration
# not among the choices): the handlers check every value (``controls.controls_from``, compare's
# configs) and answer in the settings check's words. Class-wide: Gradio rebuilds a component
# from its class whenever an event updates it, so an instance's own method would be lost, and a
# subclass makes Gradio write an app.pyi stub next to this file. Every slider, number box,
# radio and checkbox group of this app is one of ours, each with type="value".
gr.Slider.preprocess = _number_value
gr.Number.preprocess = _number_value
gr.Radio.preprocess = _as_sent
gr.CheckboxGroup.preprocess = _as_sent


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
        async def wrapper(*args, request: Optional[gr.Request] = None):
            args = with_state(args, request)
            async for item in streamed(fn(*args), args[at] if at is not None else {}, device):
                yield item
    else:
        def wrapper(*args, request: Optional[gr.Request] = None):
            return fn(*with_state(args, request))
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    wrapper.__annotations__ = {"request": gr.Request}
    wrapper.__signature__ = api_signature(fn, shown)
    return wrapper


def api_signature(fn, shown: list[str]) -> inspect.Signature:
    """The API's parameters: ``shown``, each optional where ``fn``'s own has a default, then
    Gradio's request."""
    own = inspect.signature(fn).parameters
    return inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                           default=own[n].default if n in own else inspect.Parameter.empty) for n in shown]
        + [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                             annotation=gr.Request)])


async def streamed(gen, state: dict, device: bool):
    """A handler's generator as an async generator, so that Gradio's cancel (Stop, a client's
    cancel) raises right here instead of waiting for the garbage collector: the session's run
    stops at once. ``device``: the event holds the device; however it ends, its work is stopped
    through the one switch Stop uses (``sessions.DeviceWork``, in ``state["work"]``)."""
    mine: list = []  # the switches of this event (its handler makes one as it starts)
    token = DEVICE.start() if device else None
    ended = threading.Event()

    def end(_task=None) -> None:
        """The event is over, however it ended: its work stops after its current forward and
        nothing further starts, its generator is closed and its device time logged (once)."""
        if ended.is_set():
            return
        ended.set()
        # (on the device, the session's latest switch is this event's even when it was made in
        # the frame being computed as the event was cancelled)
        for work in [*mine, state.get("work") if device else None]:
            if work is not None:
                work.stop()
        if token is not None:
            DEVICE.end(token)
        threading.Thread(target=close_when_idle, args=(gen,), daemon=True).start()

    # Gradio closes its own wrapper around this generator when an event is cancelled between
    # two frames, not this generator (that waits for the garbage collector): the end of the
    # event's task is what says for sure that nobody is watching.
    task = asyncio.current_task()
    if task is not None and GRADIO_EVENT_TASK in task.get_name():
        task.add_done_callback(end)
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, gen, DONE)
            work = state.get("work") if device else None  # only device events make switches
            if work is not None and not any(work is w for w in mine):
                mine.append(work)
            if item is DONE:
                return
            yield item
    finally:
        end()


DONE = object()
GRADIO_EVENT_TASK = "<gradio-sep>"  # in the name Gradio's queue gives each event's task


def close_when_idle(gen) -> None:
    """Close a generator that another thread may still be running (its finally runs)."""
    for _ in range(600):
        try:
            gen.close()
            return
        except ValueError:  # generator already executing
            time.sleep(0.05)
