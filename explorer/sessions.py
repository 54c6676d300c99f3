"""What the server keeps: the model pool, each browser's session, the device queue, model loading with page-worded errors, the ZeroGPU branch."""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import re
import shutil
import threading
from typing import Any, Iterable, Iterator, Optional

import gradio as gr

import visuals
from slowfast.models.dllm import PROMPT_BYTES_PER_TOKEN
from slowfast.models.families import refusal as memory_refusal
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


log = logging.getLogger("slowfast.explorer")
PRESET_PROBLEMS: list[str] = []  # the preset files skipped at start-up and why (shown under the preset menu)
PRESETS = load_presets(PRESETS_DIR, PRESET_PROBLEMS)
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


class DeviceWork:
    """One device event's stop switch (a run, a compare, a chat turn, a Tune sweep): the work
    it is doing now (``current``: anything with ``stop()`` and ``done``, e.g. a BackgroundRun)
    and whether Stop came. Stop and the event take ``lock``: an event that asks ``hold`` before
    starting each piece of work starts none after a Stop, whenever the Stop lands."""

    def __init__(self, what: str = "run"):
        self.what = what  # what each piece of work is, for Stop's note ("run", "configuration", "setting")
        self.lock = threading.Lock()
        self.current: Any = None
        self.stopped = False
        self.done = threading.Event()  # the event is over

    def hold(self, stoppable: Any) -> bool:
        """Make ``stoppable`` the work in progress; False (and ``stoppable`` stopped, so that it
        decodes nothing even if started) when Stop came first."""
        with self.lock:
            if not self.stopped:
                self.current = stoppable
                return True
        stoppable.stop()
        return False

    def stop(self) -> None:
        """Stop: the work in progress ends after its current forward, nothing further starts."""
        with self.lock:
            self.stopped = True
            current = self.current
        if current is not None and not current.done.is_set():
            current.stop()

    def finish(self) -> None:
        self.done.set()


def begin_work(state: dict, what: str = "run") -> DeviceWork:
    """A new device event's stop switch, in this browser's state (where Stop finds it)."""
    work = state["work"] = DeviceWork(what)
    return work


def held(state: dict, items: Iterable, what: str = "setting", work: Optional[DeviceWork] = None) -> Iterator:
    """``items`` one by one until Stop (or the event's end): each item with ``stop()`` and
    ``done`` (a run not started yet) is held as the work in progress before it is handed out,
    and after a Stop nothing more is taken from ``items``. ``work``: the event's switch
    (default: a new one, finished when the iteration ends). Tune stops between two settings
    with ``for point in held(state, iter_sweep(...)):``."""
    own = work is None
    work = begin_work(state, what) if own else work
    it = iter(items)
    try:
        while True:
            with work.lock:
                if work.stopped:
                    return
            try:
                item = next(it)
            except StopIteration:
                return
            if hasattr(item, "stop") and hasattr(item, "done") and not work.hold(item):
                return
            yield item
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
        if own:
            work.finish()


def stop_work(state: dict) -> Optional[DeviceWork]:
    """Stop this browser's device event, if one is under way (its switch, else None)."""
    work = state.get("work")
    if work is None or work.done.is_set():
        return None
    work.stop()
    return work


def stop_run(state: dict) -> None:
    stop_work(state)
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


# Gradio keeps its own state per browser session (every component's config, about 230 KB on this
# page), by default for 10,000 sessions and for an hour after a browser leaves; an API client
# that never opens Gradio's heartbeat (curl, a raw HTTP client) never "leaves". The app keeps at
# most PAGE_STATES of them (``launch``) and drops a browser's with its own session.
PAGE_STATES = 2 * MAX_SESSIONS
STATE_HOLDERS: list = []  # Gradio's state holder of each launched page (``launch`` adds it)


def forget_page_state(key: str) -> None:
    """Drop Gradio's own state of browser session ``key`` (it ended here)."""
    for holder in STATE_HOLDERS:
        data = getattr(holder, "session_data", None)
        if data is None:
            continue
        with holder.lock:
            data.pop(key, None)
            getattr(holder, "time_last_used", {}).pop(key, None)


SESSIONS = SessionStore(end_session, max_sessions=MAX_SESSIONS, ttl=SESSION_SECONDS, forget=forget_page_state)
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


def on_a_space() -> bool:
    """Whether this app runs as a Hugging Face Space (the platform sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


def allowed_models() -> Optional[list[str]]:
    """The only models this host offers and loads, or None for any: ``SLOWFAST_ONLY_MODELS``
    (comma-separated; ``*`` allows any), else on a Space the embedded model (and the host's
    ``SLOWFAST_MODEL``), else any."""
    listed = os.environ.get("SLOWFAST_ONLY_MODELS", "")
    only = [m.strip() for m in listed.split(",") if m.strip()]
    if "*" in only:
        return None
    if only:
        return only
    if on_a_space():
        return list(dict.fromkeys(["embedded", *[m for m in [os.environ.get("SLOWFAST_MODEL", "").strip()] if m]]))
    return None


MAX_MODEL_NAME = 1024  # characters of a model name (a hub id or a folder path); each part between slashes: 255 bytes
MAX_PROMPT_BYTES = 1 << 20  # the hard cap on a prompt (or a conversation) in UTF-8 bytes, before its model is known


def model_name_refusal(model_name: Any) -> Optional[str]:
    """Why ``model_name`` is refused before anything looks for it (Markdown), or None. The
    file system is never asked about a name it could not hold (a 100,000-character name gave
    'File name too long')."""
    if not isinstance(model_name, str):
        return f"Model: a name (text) is needed, not {type(model_name).__name__}."
    name = model_name.strip()
    if not name:
        return "Model: type or pick a model name."
    if len(name) > MAX_MODEL_NAME or any(len(part.encode("utf-8", "surrogatepass")) > 255
                                         for part in name.split("/")):
        return (f"Model: a name of {len(name):,} characters is not a model this server can load; allowed: a hub "
                f"id (owner/name) or a folder path of at most {MAX_MODEL_NAME} characters.")
    if not name.isprintable():
        return "Model: the name holds control characters; allowed: a hub id (owner/name) or a folder path."
    return None


def prompt_bytes(prompt: Any) -> int:
    """A prompt's size in UTF-8 bytes: text, a conversation ({role, content} turns) or token ids;
    counted without copying more than one part at a time."""
    if isinstance(prompt, str):
        return len(prompt.encode("utf-8", "surrogatepass"))
    if isinstance(prompt, dict):
        return sum(prompt_bytes(v) for v in prompt.values())
    if isinstance(prompt, (list, tuple)):
        return sum(prompt_bytes(item) for item in prompt)
    return len(str(prompt)) if isinstance(prompt, (int, float)) or prompt is None else 0


def prompt_limit(model: Any = None) -> int:
    """The most bytes a prompt may have: the model's own bound (``DLLM.max_prompt_bytes``:
    PROMPT_BYTES_PER_TOKEN per token of its context) once it is loaded, and at most
    MAX_PROMPT_BYTES in any case (the bound before the model is loaded)."""
    own = getattr(model, "max_prompt_bytes", None)
    return min(MAX_PROMPT_BYTES, own) if isinstance(own, int) and own > 0 else MAX_PROMPT_BYTES


def prompt_refusal(prompt: Any, model_name: Any = None) -> Optional[str]:
    """Why ``prompt`` (text or a conversation) is missing or too long to tokenize, or None:
    its size in bytes, checked before anything else an event does (before loading the model,
    before tokenizing), against ``model_name``'s own bound when that model is loaded, else
    the hard cap; so a 10 MB prompt costs microseconds, not seconds of tokenizing in the
    device's queue. (Run checks the bytes again against the model's bound, then the tokens
    against its context, before it decodes.)"""
    if prompt is None:
        return "Prompt: empty; type a prompt."
    if not isinstance(prompt, (str, list)):  # text, or the chat box's conversation
        return f"Prompt: text is needed, not {type(prompt).__name__}."
    model = POOL.models.get(model_name.strip()) if isinstance(model_name, str) else None
    size, limit = prompt_bytes(prompt), prompt_limit(model)
    if size <= limit:
        return None
    why = (f"{PROMPT_BYTES_PER_TOKEN} bytes per token of this model's context of {model.max_length:,} tokens"
           if limit < MAX_PROMPT_BYTES else "the most any model here reads")
    return (f"Prompt: {size:,} bytes is too long; allowed: at most {limit:,} bytes ({why}). "
            "Shorten the prompt (or the conversation).")


WEB_WORDS = (  # the loader speaks to the command line; the page names its own controls
    ("--trust-remote-code (load_model(..., trust_remote_code=True))", "the \"Allow the model's own code\" box"),
    ("(--model /path/to/folder)", "(type its path as the model)"), ("(--model embedded)", "(embedded)"),
    ("Pass a local checkpoint folder with --model.", "Type a local checkpoint folder as the model."),
)


def for_the_page(message: str) -> str:
    for cli, page in WEB_WORDS:
        message = message.replace(cli, page)
    return message


# The loader's messages about a typed folder that is missing or holds no model: a visitor must
# not learn which folders exist on the server, so the page says one sentence for both.
UNUSABLE_PATH = re.compile(r"(: no such folder, and not a hub id|has no config\.json\.|/config\.json: cannot be read)")


def unusable_path_note(name: str) -> str:
    return (f"Could not load **{visuals.esc(name)}**: there is no model this server can use under that name. "
            "Pick a listed model, type a hub id (owner/name), or a folder on this server that holds config.json, "
            "the *.safetensors weights and the tokenizer files.")


def own_sampler_note(model: Any, what: str) -> Optional[str]:
    """For a model that decodes only with its own sampler (DiffusionGemma), why ``what`` (Compare,
    Tune: our samplers on a masked diffusion LM) cannot run on it; None for any other model."""
    if not getattr(model, "OWN_GENERATION", False):
        return None
    return (f"**{visuals.esc(model.name)}** is a DiffusionGemma: it decodes only with its own sampler "
            f"(entropy_bound, through transformers' generate), so {what} cannot run on it (they need a masked "
            "diffusion LM). Use **Run** with its sliders.")


def loading_note(model_name: str) -> str:
    """'' or, for a model of a billion parameters or more that is not loaded yet, what it needs."""
    if model_name_refusal(model_name) is not None:
        return ""
    name = model_name.strip()
    if name in POOL.models:
        return ""
    try:
        need = check_memory(name)
    except (ModelLoadError, ValueError, OSError, RuntimeError):
        return ""
    if need.fits is False or (need.parameters or 0) < 1e9:
        return ""
    return f"Loading **{visuals.esc(name)}** (this takes a while): {visuals.esc(need.message)}."


def load(model_name: str, trust_remote_code: bool = False):
    """The model, or None and a message (the app keeps working with what it has).
    ``trust_remote_code`` (the page's opt-in box) lets a folder's own Python build it."""
    refusal = model_name_refusal(model_name)
    if refusal is not None:
        return None, visuals.esc(refusal)
    only = allowed_models()
    if only is not None and model_name.strip() not in only:
        return None, f"This host serves only: {visuals.esc(', '.join(only))}."
    name = model_name.strip()
    need = None
    if name not in POOL.models:  # say what a big model needs before a long download and load
        try:
            need = check_memory(name)
        except (ModelLoadError, ValueError, OSError, RuntimeError):
            need = None
        if need is not None and need.fits is False:
            return None, f"Not loaded: {visuals.esc(memory_refusal(need))}. ({visuals.esc(need.message)}.)"
    try:
        return POOL.get(model_name, trust_remote_code=bool(trust_remote_code) and only is None), POOL.note
    except (ModelLoadError, ValueError) as exc:  # (a ModelLoadError is a RuntimeError: first)
        if UNUSABLE_PATH.search(str(exc)):
            return None, unusable_path_note(name)
        return None, f"Could not load **{visuals.esc(name)}**: {visuals.esc(for_the_page(str(exc)))}"
    except OSError:  # a path the file system refuses (a loop, no permission): as a missing one
        return None, unusable_path_note(name)
    except RuntimeError as exc:  # e.g. '~nobody': no such home directory
        return None, f"Could not load **{visuals.esc(name)}**: {visuals.esc(str(exc))}"
