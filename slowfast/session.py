"""What the explorer app needs beyond the engine, without any UI code: a pool of loaded
models, controls -> settings with the checks a user sees before a run, example prompts,
and a run decoding in a background thread that the UI polls (so rendering never blocks
the decoder and Stop ends the run within one step)."""
from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from .cache import CACHE_PRESETS
from .engine import GenerationSettings, drain
from .gemma_run import new_run  # our engine's Run, or DiffusionGemma's through transformers' generate
from .params import BY_NAME, CACHE, GENERATION, LIMITS, Param
from .samplers import DEFAULT_SAMPLER, SAMPLERS, on_change, sampler_params
from .models.dllm import DLLM
from .models.loading import KNOWN_MODELS, ModelLoadError, load_model
from .trace import Trace

MODEL_CHOICES = ["embedded", *KNOWN_MODELS]
log = logging.getLogger("slowfast.session")


class ModelPool:
    """Loaded models by name. On a GPU only one is kept (loading another evicts it and says
    so); on a CPU up to ``max_cpu`` are kept, the oldest evicted first."""

    def __init__(self, max_cpu: int = 2):
        self.max_cpu = max_cpu
        self.models: dict[str, DLLM] = {}
        self.lock = threading.Lock()
        self.note = ""

    def get(self, name: str, device: Optional[str] = None, trust_remote_code: bool = False) -> DLLM:
        """The model ``name`` (loading it if needed); raises ModelLoadError/ValueError."""
        name = (name or "").strip()
        with self.lock:
            if name in self.models:
                self.note = f"using loaded model '{name}'"
                return self.models[name]
            model = load_model(name, device=device, trust_remote_code=trust_remote_code)
            limit = 1 if model.device.type == "cuda" else self.max_cpu
            evicted = []
            while len(self.models) >= limit:
                old = next(iter(self.models))
                evicted.append(old)
                del self.models[old]
            if evicted and model.device.type == "cuda":
                torch.cuda.empty_cache()
            self.models[name] = model
            self.note = f"loaded '{name}' on {model.device}" + (
                f"; unloaded {', '.join(evicted)} to make room" if evicted else "")
            return model


# The prompt the app opens with: a held-out story the embedded model tells consistently under
# the default controls (tests/test_presets.py checks it).
DEFAULT_PROMPT = "Story: Ivy has three blue keys ."


def example_prompts(per_task: int = 2) -> dict[str, str]:
    """Label -> prompt, drawn from the held-out task sets (story, arithmetic chain, copy)."""
    from .tasks import TASKS

    out: dict[str, str] = {}
    for name, task in TASKS.items():
        for i, ex in enumerate(task.examples("heldout", per_task, seed=0)):
            out[f"{name} #{i + 1}"] = ex.prompt
    return out


class Controls:
    """Every control of the app, named as GenerationSettings and the samplers name them: the
    sampler, the chat and cache switches, and one field per parameter of the table
    (``slowfast.params``: generation, every registered sampler's, the cache's, the caps), whose
    default is the table's (read when a Controls is made) or, for an unset one, the control's
    off value. A dataclass, remade in place when a sampler is registered (``_define_controls``)."""

    def settings(self) -> GenerationSettings:
        """The run these controls describe (raises ValueError naming a bad parameter)."""
        def value(p: Param) -> Any:
            return p.from_control(getattr(self, p.name))

        settings = GenerationSettings(
            sampler=self.sampler, chat=bool(self.chat), **{p.name: value(p) for p in (*GENERATION, *LIMITS)},
            params={p.name: value(p) for p in sampler_params(self.sampler)},
            cache={p.name: value(p) for p in CACHE} if self.cache else None,
        )
        settings.policy()
        return settings


def _control_fields() -> list[tuple[str, type, Any]]:
    """(name, type, default) of every control, in the order the app's API takes them."""
    def own(p: Param) -> tuple[str, type, Any]:
        return p.name, p.type, field(default_factory=lambda: BY_NAME[p.name].control_default)

    return [("sampler", str, DEFAULT_SAMPLER), *map(own, GENERATION), ("chat", bool, True),
            *(own(p) for policy in SAMPLERS.values() for p in policy.PARAMS),
            ("cache", bool, False), *map(own, CACHE), *map(own, LIMITS)]


_MADE_BY_DATACLASS = ("__init__", "__repr__", "__eq__", "__hash__", "__match_args__", "__dataclass_fields__",
                      "__dataclass_params__")


def _define_controls() -> None:
    """(Re)make ``Controls`` the dataclass of the fields above, in place, so every module that
    imported it sees the fields of a sampler registered later."""
    for name in (*getattr(Controls, "__dataclass_fields__", ()), *_MADE_BY_DATACLASS):
        if name in vars(Controls):
            delattr(Controls, name)
    Controls.__annotations__ = {}
    for name, kind, default in _control_fields():
        Controls.__annotations__[name] = kind
        setattr(Controls, name, default)
    dataclass(Controls)


_define_controls()
on_change(_define_controls)


def check_controls(controls: Controls, model: Optional[DLLM] = None, prompt: Optional[str] = None) -> str:
    """'' when a run with these controls can start, else the reason (shown next to Run)."""
    try:
        settings = controls.settings()
        if model is not None and prompt is not None:
            new_run(model, prompt, settings)
    except ValueError as exc:
        return str(exc)
    return ""


def preset_controls(preset: dict[str, Any]) -> dict[str, Any]:
    """Control values a preset file sets (its ``settings`` flattened onto Controls' names)."""
    s = dict(preset.get("settings", {}))
    values = {k: v for k, v in s.items() if k not in ("params", "cache")}
    values.update(s.get("params", {}))
    if "cache" in s:
        cache = s["cache"]
        if cache is None:
            values["cache"] = False
        else:
            cache = dict(CACHE_PRESETS.get(cache, {})) if isinstance(cache, str) else dict(cache)
            values.update(cache=True, **cache)
    for name, value in values.items():
        if name in BY_NAME:
            values[name] = BY_NAME[name].to_control(value)  # "unset" is the control's off value
    unknown = set(values) - set(Controls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"preset {preset.get('name')!r}: unknown settings {sorted(unknown)}")
    return values


class DecodeLog:
    """One decoding at a time on this process's device, and a record of when each ran.

    Every decode of the app (live runs, compare, chat) holds ``lock`` while it decodes, so a
    run whose client went away can never overlap the next client's run; ``intervals``
    (bounded) lets a load test prove it."""

    def __init__(self, keep: int = 1000):
        self.lock = threading.Lock()
        self.intervals: deque[tuple[float, float, str]] = deque(maxlen=keep)
        self.active = 0
        self.max_active = 0
        self._count_lock = threading.Lock()

    @contextmanager
    def decoding(self, label: str = ""):
        with self.lock:
            with self._count_lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            start = time.monotonic()
            try:
                yield
            finally:
                with self._count_lock:
                    self.active -= 1
                self.intervals.append((start, time.monotonic(), label))
                log.debug("decoded %s in %.3f s", label, time.monotonic() - start)


DECODES = DecodeLog()


class DeviceEvents:
    """How long the device's events (runs, compares, chat turns, tune sweeps) hold it, from
    start to their last frame, so a queued browser is told a wait that holds. (Gradio's own
    estimate counts a streaming event only up to its first frame.)"""

    def __init__(self, keep: int = 20):
        self.durations: deque[float] = deque(maxlen=keep)
        self.started: dict[int, float] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def start(self) -> int:
        key = next(self._ids)
        with self._lock:
            self.started[key] = time.monotonic()
        return key

    def end(self, key: int) -> None:
        with self._lock:
            start = self.started.pop(key, None)
            if start is not None:
                self.durations.append(time.monotonic() - start)

    def note(self, waiting: int) -> str:
        """What a browser whose event joins the queue now is told ("" when the device is free)."""
        with self._lock:
            running = [time.monotonic() - t for t in self.started.values()]
            durations = sorted(self.durations)
        if not running and waiting <= 0:
            return ""
        ahead = len(running) + max(waiting, 0)
        line = (f"⏳ {ahead} {'run is' if ahead == 1 else 'runs are'} ahead of yours on this machine "
                f"(one decoding at a time).")
        if durations:
            typical = durations[len(durations) // 2]
            eta = sum(max(typical - r, 1.0) for r in running) + max(waiting, 0) * typical
            line += (f" Runs here have taken about {typical:.0f} s each (median of the last {len(durations)}), "
                     f"so yours should start in about {eta:.0f} s.")
        return line


class BackgroundRun:
    """A Run decoding in its own thread; the UI polls ``wait`` and reads ``trace``.

    ``stop`` ends it within one forward, also while it still waits for the device (then it
    decodes nothing). The UI calls ``stop`` when its client cancels or goes away."""

    def __init__(self, model: DLLM, prompt: str, settings: GenerationSettings, label: str = ""):
        self.run = new_run(model, prompt, settings)  # validates before any thread starts
        self.label = label or settings.sampler
        self.done = threading.Event()
        self.error: Optional[str] = None
        self.thread = threading.Thread(target=self._work, daemon=True)

    def _work(self) -> None:
        try:
            with DECODES.decoding(self.label):
                self.error = drain(self.run).stats.error  # a cap that ended the run
        except Exception as exc:  # the UI shows it; the records so far stay in the trace
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def start(self) -> "BackgroundRun":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.run.stop()

    def wait(self, seconds: float) -> bool:
        """Block up to ``seconds``; True once the run has ended."""
        return self.done.wait(seconds)

    @property
    def steps_done(self) -> int:
        return len(self.run.records)

    def trace(self) -> Trace:
        return self.run.trace


def stream_batches(job: BackgroundRun, interval: float = 0.05, budget: float = 0.05,
                   poll: float = 0.005) -> Iterator[tuple[Trace, bool]]:
    """Yield ``(trace, False)`` whenever the live run has records not yet yielded, at most one
    every ``interval`` seconds, then ``(trace, True)`` once it has ended (every record by then).

    The caller's work between two yields (computing and sending the new steps) holds the
    interpreter the decoder needs, so while the run decodes it may take at most ``budget`` of
    the time since the run started; over it, the next yield waits and carries more steps."""
    sent, spent, start, last = 0, 0.0, time.perf_counter(), -math.inf
    while True:
        done = job.done.is_set()
        n = job.steps_done
        if done and n <= sent:
            break
        now = time.perf_counter()
        if n > sent and not done and now - last >= interval and spent <= budget * (now - start):
            yield job.trace(), False
            spent += time.perf_counter() - now
            sent, last = n, time.perf_counter()
            continue
        if done:  # the records left go with the last yield
            break
        job.wait(poll)
    yield job.trace(), True


def run_to_end(model: DLLM, prompt: str, settings: GenerationSettings) -> Trace:
    """Decode synchronously (tests, the Space's GPU worker); errors end the run and stay in its trace."""
    with DECODES.decoding(settings.sampler):
        return drain(new_run(model, prompt, settings))





class SessionStore:
    """Per-browser state held on the server, bounded: at most ``max_sessions`` sessions, each
    dropped ``ttl`` seconds after its last use, when its browser leaves (``drop``), or when
    newer sessions need the room. ``on_drop`` releases what a dropped state holds (it stops
    the session's run), and ``forget`` (optional) is told the dropped session's key (the app
    drops the web framework's own state of that browser), so a client that disconnects leaves
    nothing decoding or in memory."""

    def __init__(self, on_drop: Callable[[dict], None], max_sessions: int = 64, ttl: float = 3600.0,
                 forget: Optional[Callable[[str], None]] = None):
        self.on_drop, self.max_sessions, self.ttl, self.forget = on_drop, max_sessions, ttl, forget
        self._states: dict[str, tuple[dict, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: Optional[str]) -> dict:
        """The state of session ``key`` (a fresh one the first time); refreshes its expiry."""
        now = time.monotonic()
        with self._lock:
            dropped = [k for k, (_, used) in self._states.items() if now - used > self.ttl and k != key]
            state = self._states.pop(key, ({}, now))[0] if key is not None else {}
            while len(self._states) - len(dropped) >= self.max_sessions:
                oldest = next(k for k in self._states if k not in dropped)
                dropped.append(oldest)
            released = [(k, self._states.pop(k)[0]) for k in dropped]
            if key is not None:
                self._states[key] = (state, now)  # most recently used last
        for k, old in released:
            self._release(k, old)
        return state

    def drop(self, key: Optional[str]) -> None:
        with self._lock:
            entry = self._states.pop(key, None)
        if entry is not None:
            self._release(key, entry[0])

    def _release(self, key: str, state: dict) -> None:
        self.on_drop(state)
        if self.forget is not None:
            self.forget(key)

    def __len__(self) -> int:
        return len(self._states)


PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


PRESET_TEXT_FIELDS = ("description", "prompt", "explanation")  # optional, text when present


def check_preset(preset: Any) -> str:
    """The preset's name if ``preset`` (a preset file's JSON) is one the app can offer, else
    ValueError saying why: an object with a name (text), optional text fields, ``settings``
    (an object) that the settings check accepts, and a ``cache`` that is null, a known cache
    preset's name or an object of cache settings."""
    if not isinstance(preset, dict):
        raise ValueError(f"not a JSON object (it holds a {type(preset).__name__})")
    name = preset.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("no \"name\" (text) to show in the preset menu")
    for key in PRESET_TEXT_FIELDS:
        if key in preset and not isinstance(preset[key], str):
            raise ValueError(f"\"{key}\" is a {type(preset[key]).__name__}, not text")
    if "checks" in preset and not isinstance(preset["checks"], dict):
        raise ValueError("\"checks\" is not an object")
    settings = preset.get("settings")
    if not isinstance(settings, dict):
        raise ValueError("no \"settings\" object")
    if "params" in settings and not isinstance(settings["params"], dict):
        raise ValueError("settings.params is not an object")
    cache = settings.get("cache")
    if isinstance(cache, str) and cache not in CACHE_PRESETS:
        raise ValueError(f"settings.cache: {cache!r} is not a cache preset; allowed: {', '.join(CACHE_PRESETS)}, "
                         "null or an object of cache settings")
    if cache is not None and not isinstance(cache, (str, dict)):
        raise ValueError(f"settings.cache is a {type(cache).__name__}; allowed: a cache preset's name, null or an "
                         "object of cache settings")
    try:
        settings_ = Controls(**preset_controls(preset)).settings()
    except (ValueError, TypeError, OverflowError, KeyError, AttributeError) as exc:
        raise ValueError(str(exc).removeprefix(f"preset {name!r}: ")) from None
    own = {p.name for p in sampler_params(settings_.sampler)}
    foreign = sorted(k for k in settings.get("params", {}) if k not in own)
    if foreign:  # the run would ignore them: the preset would not do what it says
        raise ValueError(f"settings.params: {', '.join(foreign)} {'is not a parameter' if len(foreign) == 1 else 'are not parameters'} "
                         f"of the {settings_.sampler} sampler; its parameters: {', '.join(sorted(own)) or 'none'}")
    return name


def load_presets(folder, problems: Optional[list[str]] = None) -> dict[str, dict[str, Any]]:
    """Name -> preset from ``folder/*.json`` (sorted by file name). A file that is not a valid
    preset (``check_preset``), or whose name an earlier file has, is skipped with a logged
    message naming the file and why; ``problems`` collects those messages (the app shows them
    under its preset menu), so one bad file never stops the app from starting."""
    import json

    presets: dict[str, dict[str, Any]] = {}
    files: dict[str, str] = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            preset = json.loads(path.read_bytes().decode("utf-8"))
            name = check_preset(preset)
            if name in presets:
                raise ValueError(f"its name {name!r} is already the name of {files[name]}")
        except (OSError, UnicodeDecodeError, RecursionError, ValueError) as exc:
            why = (f"not valid JSON ({exc})" if isinstance(exc, json.JSONDecodeError) else
                   f"not UTF-8 text ({exc.reason})" if isinstance(exc, UnicodeDecodeError) else
                   f"cannot be read ({exc.strerror or exc})" if isinstance(exc, OSError) else
                   "nested too deeply" if isinstance(exc, RecursionError) else str(exc))
            message = f"preset file {path.name}: {why}; skipped"
            log.warning("%s", message)
            if problems is not None:
                problems.append(message)
            continue
        presets[name], files[name] = preset, path.name
    return presets


__all__ = ["BackgroundRun", "Controls", "DECODES", "DEFAULT_PROMPT", "MODEL_CHOICES", "ModelLoadError", "ModelPool", "PRESETS_DIR",
           "SessionStore", "check_controls",
           "check_preset", "example_prompts", "load_presets", "preset_controls", "run_to_end", "stream_batches", "DeviceEvents"]
