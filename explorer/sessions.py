"""What the server keeps: the model pool, each browser's session, the device queue, model loading with page-worded errors, the ZeroGPU branch."""
from __future__ import annotations

import ctypes
import gc
import os
import shutil
from typing import Optional

import gradio as gr

import visuals
from slowfast.models.loading import check_memory
from slowfast.session import (
    PRESETS_DIR,
    DeviceEvents,
    ModelLoadError,
    ModelPool,
    SessionStore,
    load_presets,
    run_to_end,
)
from slowfast.tasks import TASKS


PRESETS = load_presets(PRESETS_DIR)
TASK_NAMES = list(TASKS)
SESSION_SECONDS = 3600  # a browser's runs and traces are dropped this long after its last event
MAX_SESSIONS = 64  # browsers whose last run is kept for scrubbing, export and compare
QUEUE_SIZE = 64  # events waiting for the device; more are refused with "queue full"
MAX_UPLOAD = "16mb"  # largest trace file a browser may upload
POOL = ModelPool()


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


decode_on_gpu = space_decoder()  # None outside a ZeroGPU Space (tests replace it)


def stop_run(state: dict) -> None:
    job = state.get("run")
    if job is not None and not job.done.is_set():
        job.stop()


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
