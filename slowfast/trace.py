"""StepRecord / Trace: what one decoding run did, step by step, and its file format.

A trace file is UTF-8 JSON (see the README, "Trace file format"). Per-step arrays are
stored as base64 of their little-endian bytes with their dtype, so a saved trace loads
back bit for bit.

Trace files are also uploaded by strangers (the app replays them), so ``Trace.load`` and
``Trace.from_dict`` check everything against the documented format, within the limits
below, before returning anything: a bad file raises ``TraceFormatError`` naming the field
(and the record), never a raw exception, and never costs more than its size allows.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .params import CACHE, shown
from .samplers import stage_names  # the stages a record may name: every registered sampler's

FORMAT = "slowfast-trace"
VERSION = 1
ARRAY_FIELDS = {"confidence": np.float16, "argmax": np.int32}
ARRAY_DTYPES = {"confidence": "<f2", "argmax": "<i4"}  # as written by encode_array (little-endian)
# Optional per-record arrays (DiffusionGemma's steps; absent from the engine's records and from older files):
# the per-position entropy of the processed logits, and the canvas after the step (renoised positions included).
OPTIONAL_ARRAYS = {"entropy": np.float16, "canvas": np.int32}
OPTIONAL_DTYPES = {"entropy": "<f2", "canvas": "<i4"}
OPTIONAL_LISTS = ("accepted", "renoised",  # positions the step accepted / renoised (DiffusionGemma)
                  "edited")  # decoded positions that took a new token (a policy that edits: llada2)

# Limits on what a trace may hold (README, "Trace file format"). They bound the time and
# memory a load and a replay take, so an uploaded file cannot hold the app.
MAX_FILE_BYTES = 64 * 2**20  # a trace file: 64 MiB
MAX_JSON_ITEMS = 4_000_000  # ',' + '[' + '{' bytes in a file (a bound on JSON values), checked before parsing
MAX_GEN_LENGTH = 4096  # settings.gen_length
MAX_RECORDS = 8192  # records (forwards) in one trace
MAX_PROMPT_TOKENS = 65536  # prompt_ids
MAX_TEXT_CHARS = 1_000_000  # prompt, text, summary.error
MAX_NAME_CHARS = 4096  # model (a name or a path)
MAX_TOKEN_STRINGS = 262144  # entries of token_strings
MAX_TOKEN_CHARS = 1024  # one token's display text
MAX_LAYERS = 1024  # per-layer lists of a record's cache statistics
MAX_EXTRAS = 64  # entries of settings.params and of a record's info
MAX_TOKEN_ID = 2**31 - 1  # token ids (argmax is int32)
MAX_COUNT = 2**63 - 1  # counters (steps, tokens fed, bytes)


class TraceFormatError(ValueError):
    """A trace that does not follow the documented format; the message names the field."""


def encode_array(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(d: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(d["b64"])
    return np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


@dataclass
class StepRecord:
    """One forward of the model and the decision taken after it.

    Positions are indices into the generated part of the canvas. ``confidence`` and
    ``argmax`` cover all generated positions; at positions >= ``fed_end`` they are the
    values reused from the last forward that saw them (SlowFast's truncated forwards).
    """

    step: int  # 0-based index of this forward
    stage: str  # baseline / slow / fast / threshold
    block: int
    span: Optional[tuple[int, int]]  # [start, end) or None
    horizons: Optional[list[int]]  # horizon estimates in the stability window (slowfast)
    horizon_spread: Optional[float]  # their spread against the std threshold
    confidence: np.ndarray  # float16 [gen_length]
    argmax: np.ndarray  # int32 [gen_length]
    decoded: list[int]  # positions unmasked this step
    fed_end: int  # generated positions fed to this forward (gen_length = full)
    tokens_fed: int  # tokens fed to the model (prompt + fed_end, twice with CFG)
    ms: float  # wall time of this step
    nfe: int  # cumulative NFE (a CFG pair counts 1)
    forwards: int  # cumulative forward passes (a CFG pair counts 2)
    info: dict = field(default_factory=dict)  # policy extras (e.g. span estimate, cycle)
    flops: float = 0.0  # estimated matmul FLOPs of this step's forward(s)
    cache: Optional[dict] = None  # dLLM-Cache rows recomputed/reused per layer (None: no cache)
    # DiffusionGemma's steps only (None elsewhere, and then not written to the file):
    entropy: Optional[np.ndarray] = None  # float16 [gen_length]: entropy of the processed logits
    canvas: Optional[np.ndarray] = None  # int32 [gen_length]: the canvas after the step (what the next forward reads)
    accepted: Optional[list[int]] = None  # positions whose sampled token the step accepted
    renoised: Optional[list[int]] = None  # positions of the canvas it renoised (uniformly random tokens)
    edited: Optional[list[int]] = None  # llada2's steps: decoded positions that took the new argmax (canvas holds it)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["span"] = list(self.span) if self.span is not None else None
        for name in ARRAY_FIELDS:
            d[name] = encode_array(getattr(self, name))
        for name in (*OPTIONAL_ARRAYS, *OPTIONAL_LISTS):
            if d[name] is None:
                del d[name]
            elif name in OPTIONAL_ARRAYS:
                d[name] = encode_array(np.asarray(d[name], dtype=OPTIONAL_ARRAYS[name]))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], gen_length: Optional[int] = None, index: int = 0) -> "StepRecord":
        """A record from its dict, checked (``gen_length``: the trace's; None: the arrays' length)."""
        if gen_length is None:
            conf = d.get("confidence") if isinstance(d, dict) else None
            shape = conf.get("shape") if isinstance(conf, dict) else None
            if not (isinstance(shape, list) and len(shape) == 1):
                raise TraceFormatError(f"record {index}: confidence: expected an ARRAY of shape [gen_length]")
            gen_length = _int(shape[0], f"record {index}: confidence: shape[0]", 1, MAX_GEN_LENGTH)
        arrays = _check_record(d, index, gen_length, gen_length)  # blocks unknown here: at most one per position
        return cls._build(d, arrays)

    @classmethod
    def _build(cls, d: dict[str, Any], arrays: dict[str, np.ndarray]) -> "StepRecord":
        d = dict(d)
        d["span"] = tuple(d["span"]) if d.get("span") is not None else None
        d.update(arrays)
        return cls(**d)


@dataclass
class Trace:
    """Settings + prompt + records + final tokens/text + summary of one run."""

    settings: dict[str, Any]
    model: str
    prompt: str
    prompt_ids: list[int]
    mask_id: int
    records: list[StepRecord] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # final generated canvas (gen_length ids)
    text: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    token_strings: dict[str, str] = field(default_factory=dict)  # id -> display text, for replay

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "settings": self.settings,
            "model": self.model,
            "prompt": self.prompt,
            "prompt_ids": self.prompt_ids,
            "mask_id": self.mask_id,
            "tokens": self.tokens,
            "text": self.text,
            "summary": self.summary,
            "token_strings": self.token_strings,
            "records": [r.to_dict() for r in self.records],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trace":
        """A Trace from its dict, checked in full first (raises TraceFormatError)."""
        arrays = _check_trace(d)
        records = [StepRecord._build(r, a) for r, a in zip(d["records"], arrays)]
        fields_ = {k: v for k, v in d.items() if k not in ("format", "version", "records")}
        return cls(records=records, **fields_)

    def save(self, path: str | Path) -> Path:
        """Write the trace as JSON (atomically: a failed write leaves no half file)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.to_dict()), encoding="utf-8")
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # no stray .tmp after a failed write
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        """Read a trace file: its size is checked before it is read, then it is parsed and checked."""
        path = Path(path)
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise TraceFormatError(_too_big(size))
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # a file that grows (or a device) is cut here
        if len(raw) > MAX_FILE_BYTES:
            raise TraceFormatError(_too_big(len(raw)))
        return cls.from_json(raw)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "Trace":
        """A trace from the text of a trace file (UTF-8 bytes or str), checked."""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogatepass")
        if len(raw) > MAX_FILE_BYTES:
            raise TraceFormatError(_too_big(len(raw)))
        items = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
        if items > MAX_JSON_ITEMS:
            raise TraceFormatError(f"trace: {items} JSON values; allowed: at most {MAX_JSON_ITEMS}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TraceFormatError(f"trace: not UTF-8 text (invalid byte at offset {exc.start})") from None
        try:
            data = json.loads(text)  # NaN / Infinity parse, and are refused by the field they are in
        except RecursionError:
            raise TraceFormatError("trace: JSON nested too deeply for a trace") from None
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"trace: not valid JSON ({exc})") from None
        except ValueError:  # e.g. an integer of more than 4300 digits
            raise TraceFormatError("trace: not valid JSON (a number too long)") from None
        return cls.from_dict(data)

    @property
    def gen_length(self) -> int:
        return int(self.settings["gen_length"])

    @property
    def stats(self) -> "Summary":
        """The run's totals, typed (``summary`` is their dict, as in the file)."""
        return Summary.of_trace(self)

    def decoded_at(self) -> np.ndarray:
        """For each generated position, the step that unmasked it (-1: never)."""
        out = np.full(self.gen_length, -1, dtype=np.int64)
        for r in self.records:
            out[r.decoded] = r.step
        return out


def tokens_per_second(tokens: int, seconds: float) -> float:
    """The one definition of speed everywhere (summary, status line, figures, compare):
    tokens decoded per second of decoding (0 without time)."""
    return tokens / seconds if seconds > 0 else 0.0


@dataclass
class Summary:
    """A run's totals: what every reader of a run's outcome uses (``Trace.stats``).
    ``Trace.summary`` holds the same as a dict, as the trace file does."""

    nfe: int = 0  # forwards as the papers count them (a CFG pair is one)
    forwards: int = 0  # forward passes (a CFG pair is two)
    tokens_fed: int = 0  # tokens fed to the model over the run
    seconds: float = 0.0  # decoding time (not the time a consumer spent between steps)
    tokens_per_second: float = 0.0  # gen_length / seconds
    answer_tokens: int = 0  # generated tokens before the first end-of-text
    decoded: int = 0  # positions unmasked
    flops: float = 0.0  # estimated matmul FLOPs
    finished: bool = False  # every position decoded
    stopped: bool = False  # stopped on request
    error: Optional[str] = None  # why the engine ended it (a cap), if it did
    cache_bytes: Optional[int] = None  # dLLM-Cache memory at the end (None: no cache)

    @classmethod
    def of_run(cls, records: list[StepRecord], gen_length: int, answer_tokens: int, seconds: float,
               **end: Any) -> "Summary":
        """The totals of ``records`` (``end``: finished, stopped, error, cache_bytes)."""
        last = records[-1] if records else None
        return cls(nfe=last.nfe if last else 0, forwards=last.forwards if last else 0,
                   tokens_fed=int(sum(r.tokens_fed for r in records)), seconds=seconds,
                   tokens_per_second=tokens_per_second(gen_length, seconds), answer_tokens=answer_tokens,
                   decoded=int(sum(len(r.decoded) for r in records)),
                   flops=float(sum(r.flops for r in records)), **end)

    @classmethod
    def of_trace(cls, trace: "Trace") -> "Summary":
        """``trace.summary`` as a Summary; totals it lacks (a trace built by hand, or one
        still running) are taken from its records."""
        derived = cls.of_run(trace.records, trace.gen_length, 0, sum(r.ms for r in trace.records) / 1000.0)
        given = {k: v for k, v in (trace.summary or {}).items() if k in SUMMARY_KEYS}
        out = dataclasses.replace(derived, **given)
        if "tokens_per_second" not in given:
            out.tokens_per_second = tokens_per_second(trace.gen_length, out.seconds)
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def speedups(self, reference: "Summary") -> dict[str, float]:
        """How many times faster than ``reference`` this run was: by NFE and by tokens fed
        (exact, repeatable) and by time (measured; NaN without time). The one definition the
        app's compare and the benchmarks share."""
        return {"nfe": ratio(reference.nfe, self.nfe), "tokens_fed": ratio(reference.tokens_fed, self.tokens_fed),
                "time": ratio(reference.seconds, self.seconds)}


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


SUMMARY_KEYS = tuple(f.name for f in fields(Summary))


# --- checking a trace against the documented format ------------------------------------------------
# Messages name the field (``settings.gen_length``, ``record 3: decoded``) and show numbers,
# but never echo a file's text: the app shows them as Markdown.
TOP_KEYS = ("format", "version", "settings", "model", "prompt", "prompt_ids", "mask_id", "tokens", "text",
            "summary", "token_strings", "records")
SETTINGS_KEYS = ("sampler", "gen_length", "block_length", "steps", "temperature", "seed", "cfg_scale", "chat",
                 "params", "max_forwards_per_block", "cache")
CACHE_SETTINGS_KEYS = tuple(p.name for p in CACHE)
RECORD_KEYS = tuple(f.name for f in fields(StepRecord))
REQUIRED_RECORD_KEYS = tuple(k for k in RECORD_KEYS if k not in (*OPTIONAL_ARRAYS, *OPTIONAL_LISTS))
CACHE_COUNT_KEYS = ("prompt_recomputed", "prompt_reused", "response_recomputed", "response_reused")
INFO_TYPES = {"cycle": "count", "k": "count", "estimate": "number", "frozen": "bool",  # known policy extras
              # DiffusionGemma's steps (gemma_run.py)
              "temperature": "number", "mean_entropy": "number", "stable": "bool", "confident": "bool",
              "stop": "bool", "remaining": "count", "accepted_count": "count"}
_SAFE_TEXT = re.compile(r"[A-Za-z0-9_.\-]{1,40}\Z")  # shown quoted in messages; anything else is described
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")  # names of sampler parameters and policy extras
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.\-]{0,64}\Z")  # string values of sampler parameters
_TOKEN_KEY = re.compile(r"(0|[1-9][0-9]{0,9})\Z")
_DTYPE = re.compile(r"[<>|=]?[a-z][0-9]{1,2}\Z")  # a numpy dtype string such as '<f4'"


def _too_big(size: int) -> str:
    return f"trace: the file is {size} bytes; allowed: at most {MAX_FILE_BYTES} ({MAX_FILE_BYTES // 2**20} MiB)"


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, (bool, np.bool_)):
        return "true/false"
    if _is_number(v):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return "a " + type(v).__name__


def _show(v: Any) -> str:
    """A value for a message: numbers and plain short words as they are, anything else by its kind."""
    if v is None:
        return "null"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if _is_int(v):
        return shown(int(v))  # digits, or "an integer of N digits" when it is long
    if _is_number(v):
        return repr(float(v))
    if isinstance(v, str):
        return f"'{v}'" if _SAFE_TEXT.match(v) else f"a string of {len(v)} characters"
    return _kind(v)


def _fail(where: str, what: str) -> TraceFormatError:
    return TraceFormatError(f"{where}: {what}")


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if not _is_int(v):
        raise _fail(where, f"expected an integer in {lo}..{hi}, got {_show(v)}")
    if not lo <= v <= hi:
        raise _fail(where, f"{_show(v)} outside {lo}..{hi}")
    return int(v)


def _number(v: Any, where: str, lo: float = 0.0, hi: float = math.inf) -> float:
    if not _is_number(v):
        raise _fail(where, f"expected a number, got {_show(v)}")
    try:
        x = float(v)
    except OverflowError:  # an integer beyond a float's range (~1.8e308)
        x = math.inf
    if not math.isfinite(x):
        raise _fail(where, f"{_show(v)} is not a finite number")
    if not lo <= x <= hi:
        raise _fail(where, f"{_show(v)} outside {lo:g}..{hi:g}")
    return x


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise _fail(where, f"expected true or false, got {_show(v)}")
    return bool(v)


def _str(v: Any, where: str, max_chars: int) -> str:
    if not isinstance(v, str):
        raise _fail(where, f"expected a string, got {_show(v)}")
    if len(v) > max_chars:
        raise _fail(where, f"{len(v)} characters; allowed: at most {max_chars}")
    return v


def _list(v: Any, where: str, max_len: int) -> list:
    if not isinstance(v, (list, tuple)):
        raise _fail(where, f"expected a list, got {_show(v)}")
    if len(v) > max_len:
        raise _fail(where, f"{len(v)} entries; allowed: at most {max_len}")
    return list(v)


def _ints(v: Any, where: str, max_len: int, lo: int, hi: int) -> list[int]:
    out = _list(v, where, max_len)
    for i, x in enumerate(out):
        _int(x, f"{where}[{i}]", lo, hi)
    return out


def _object(v: Any, where: str, required: tuple = (), allowed: Optional[tuple] = None,
            max_len: int = 256) -> dict:
    """``v`` is a dict with every ``required`` key and, when ``allowed`` is given, no other."""
    if not isinstance(v, dict):
        raise _fail(where, f"expected an object, got {_show(v)}")
    if len(v) > max_len:
        raise _fail(where, f"{len(v)} entries; allowed: at most {max_len}")
    for k in v:
        if not isinstance(k, str):
            raise _fail(where, f"a key is {_kind(k)}; keys are strings")
    missing = [k for k in required if k not in v]
    if missing:
        raise _fail(where, f"missing field '{missing[0]}'")
    if allowed is not None:
        unknown = [k for k in v if k not in allowed]
        if unknown:
            raise _fail(where, f"unknown field {_show(unknown[0])}; allowed: {', '.join(allowed)}")
    return v


def _scalar(v: Any, where: str, max_chars: int, pattern: Optional[re.Pattern] = None) -> None:
    """A JSON scalar: null, true/false, a finite number or a string (matching ``pattern``)."""
    if v is None or isinstance(v, (bool, np.bool_)):
        return
    if _is_number(v):
        _number(v, where, -math.inf, math.inf)
        return
    if isinstance(v, str):
        _str(v, where, max_chars)
        if pattern is not None and not pattern.match(v):
            raise _fail(where, f"{_show(v)} is not allowed; a parameter's text is letters, digits and _.-")
        return
    raise _fail(where, f"expected a number, a string, true/false or null, got {_show(v)}")


def _check_settings(s: Any) -> tuple[int, int]:
    """Check ``settings``; returns (gen_length, number of blocks). The shape and the values'
    kinds are checked here (so messages show only short plain values); what the values may
    be, the engine's own check of a run's settings says (``GenerationSettings.policy``)."""
    _object(s, "settings", SETTINGS_KEYS, SETTINGS_KEYS)
    sampler = s["sampler"]
    if not isinstance(sampler, str) or not _KEY.match(sampler):
        raise _fail("settings.sampler", f"expected a sampler name, got {_show(sampler)}")
    for k in SETTINGS_KEYS:
        if k not in ("sampler", "params", "cache"):
            _scalar(s[k], f"settings.{k}", 64, _SAFE_VALUE)
    _bool(s["chat"], "settings.chat")
    params = _object(s["params"], "settings.params", max_len=MAX_EXTRAS)
    for k, v in params.items():
        if not _KEY.match(k):
            raise _fail("settings.params", f"parameter name {_show(k)} is not allowed")
        _scalar(v, f"settings.params.{k}", 64, _SAFE_VALUE)
    cache = s["cache"]
    if cache is not None:
        _object(cache, "settings.cache", CACHE_SETTINGS_KEYS, CACHE_SETTINGS_KEYS)
        for k, v in cache.items():
            _scalar(v, f"settings.cache.{k}", 64, _SAFE_VALUE)
    from .engine import GenerationSettings  # here: the engine imports this module

    try:  # every parameter against its definition, the sampler's own checks, the fit to the layout
        GenerationSettings.from_dict(s).policy()
    except (ValueError, TypeError) as exc:  # their messages show only the values checked above
        raise _fail("settings", str(exc)) from None
    G = int(s["gen_length"])
    if G > MAX_GEN_LENGTH:  # this format's own limit
        raise _fail("settings.gen_length", f"{G} outside 1..{MAX_GEN_LENGTH}")
    return G, G // int(s["block_length"])


def _check_summary(s: Any, G: int) -> None:
    _object(s, "summary", SUMMARY_KEYS, SUMMARY_KEYS)
    for k in ("nfe", "forwards", "tokens_fed"):
        _int(s[k], f"summary.{k}", 0, MAX_COUNT)
    for k in ("answer_tokens", "decoded"):
        _int(s[k], f"summary.{k}", 0, G)
    for k in ("seconds", "tokens_per_second", "flops"):
        _number(s[k], f"summary.{k}")
    _bool(s["finished"], "summary.finished")
    _bool(s["stopped"], "summary.stopped")
    if s["error"] is not None:
        _str(s["error"], "summary.error", MAX_TEXT_CHARS)
    if s["cache_bytes"] is not None:
        _int(s["cache_bytes"], "summary.cache_bytes", 0, MAX_COUNT)


def _check_token_strings(t: Any) -> None:
    _object(t, "token_strings", max_len=MAX_TOKEN_STRINGS)
    for k, v in t.items():
        if not _TOKEN_KEY.match(k) or int(k) > MAX_TOKEN_ID:
            raise _fail("token_strings", f"key {_show(k)} is not a token id (0..{MAX_TOKEN_ID} in decimal)")
        _str(v, f"token_strings[{k}]", MAX_TOKEN_CHARS)


def _check_array(a: Any, where: str, dtype: str, G: int) -> np.ndarray:
    """An ARRAY of ``dtype`` and shape [G]; the base64 length is checked before decoding."""
    _object(a, where, ("dtype", "shape", "b64"), ("dtype", "shape", "b64"))
    if a["dtype"] != dtype:
        given = a["dtype"]
        shown = f"'{given}'" if isinstance(given, str) and _DTYPE.match(given) else _show(given)
        raise _fail(where, f"dtype {shown}; expected '{dtype}'")
    shape = a["shape"]
    if not (isinstance(shape, (list, tuple)) and len(shape) == 1 and _is_int(shape[0]) and shape[0] == G):
        shown = (f"[{', '.join(_show(x) for x in shape[:4])}{', ...' if len(shape) > 4 else ''}]"
                 if isinstance(shape, (list, tuple)) else _show(shape))
        raise _fail(where, f"shape {shown}; expected [{G}] (gen_length)")
    b64 = a["b64"]
    nbytes = G * np.dtype(dtype).itemsize
    expected = 4 * ((nbytes + 2) // 3)
    if not isinstance(b64, str):
        raise _fail(where, f"b64: expected a string, got {_show(b64)}")
    if len(b64) != expected:
        raise _fail(where, f"b64: {len(b64)} characters; expected {expected} for {G} values of '{dtype}'")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(where, "b64: not valid base64") from None
    if len(raw) != nbytes:
        raise _fail(where, f"b64: decodes to {len(raw)} bytes; expected {nbytes}")
    out = np.frombuffer(raw, dtype=np.dtype(dtype)).copy()
    if dtype == ARRAY_DTYPES["confidence"]:
        top = math.inf if where.endswith(": entropy") else 1  # an entropy (nats) is >= 0; a confidence in 0..1
        bad = np.flatnonzero(~((out >= 0) & (out <= top)))  # NaN fails both
        if bad.size:
            p = int(bad[0])
            raise _fail(where, f"value {float(out[p])!r} at position {p} outside 0..{top:g}")
    else:
        bad = np.flatnonzero(out < 0)
        if bad.size:
            p = int(bad[0])
            raise _fail(where, f"token id {int(out[p])} at position {p} is negative")
    return out


def _check_record(r: Any, i: int, G: int, n_blocks: int) -> dict[str, np.ndarray]:
    """Check one record on its own; returns its decoded arrays."""
    at = f"record {i}"
    _object(r, at, REQUIRED_RECORD_KEYS, RECORD_KEYS)
    _int(r["step"], f"{at}: step", 0, MAX_RECORDS - 1)
    stage, stages = r["stage"], stage_names()
    if stage not in stages:
        raise _fail(f"{at}: stage", f"{_show(stage)} is not one of {', '.join(stages)}")
    _int(r["block"], f"{at}: block", 0, n_blocks - 1)
    span = r["span"]
    if span is not None:
        if not isinstance(span, (list, tuple)) or len(span) != 2 or not all(_is_int(x) for x in span):
            raise _fail(f"{at}: span", f"expected null or two integers [start, end), got {_show(span)}")
        start, end = int(span[0]), int(span[1])
        if not 0 <= start <= end <= G:
            raise _fail(f"{at}: span", f"[{_show(start)}, {_show(end)}) is not within 0 <= start <= end <= {G}")
    if r["horizons"] is not None:
        _ints(r["horizons"], f"{at}: horizons", MAX_GEN_LENGTH, 0, G)
    if r["horizon_spread"] is not None:
        _number(r["horizon_spread"], f"{at}: horizon_spread")
    decoded = _list(r["decoded"], f"{at}: decoded", G)
    for p in decoded:
        if not _is_int(p):
            raise TraceFormatError(f"{at}: decoded position {_show(p)} is not an integer")
        if not 0 <= p < G:
            raise TraceFormatError(f"{at}: decoded position {_show(p)} outside 0..{G - 1}")
    _int(r["fed_end"], f"{at}: fed_end", 0, G)
    _int(r["tokens_fed"], f"{at}: tokens_fed", 0, MAX_COUNT)
    _number(r["ms"], f"{at}: ms")
    _int(r["nfe"], f"{at}: nfe", 0, MAX_COUNT)
    _int(r["forwards"], f"{at}: forwards", 0, MAX_COUNT)
    info = _object(r["info"], f"{at}: info", max_len=MAX_EXTRAS)
    for k, v in info.items():
        if not _KEY.match(k):
            raise _fail(f"{at}: info", f"name {_show(k)} is not allowed")
        kind, where = INFO_TYPES.get(k), f"{at}: info.{k}"
        if kind == "count":
            _int(v, where, 0, MAX_COUNT)
        elif kind == "number":
            _number(v, where, -math.inf, math.inf)
        elif kind == "bool":
            _bool(v, where)
        else:
            _scalar(v, where, 256)
    _number(r["flops"], f"{at}: flops")
    cache = r["cache"]
    if cache is not None:
        keys = (*CACHE_COUNT_KEYS, "similarity_threshold")
        _object(cache, f"{at}: cache", keys, keys)
        n_layers = len(_list(cache["response_reused"], f"{at}: cache.response_reused", MAX_LAYERS))
        for k in keys:
            values = _list(cache[k], f"{at}: cache.{k}", MAX_LAYERS)
            if len(values) != n_layers:
                raise _fail(f"{at}: cache.{k}", f"{len(values)} layers; response_reused has {n_layers}")
            for j, x in enumerate(values):
                if k == "similarity_threshold":
                    if x is not None:
                        _number(x, f"{at}: cache.{k}[{j}]", -math.inf, math.inf)
                else:
                    _int(x, f"{at}: cache.{k}[{j}]", 0, MAX_COUNT)
    for name in OPTIONAL_LISTS:
        if r.get(name) is not None:
            _ints(r[name], f"{at}: {name}", G, 0, G - 1)
    arrays = {name: _check_array(r[name], f"{at}: {name}", ARRAY_DTYPES[name], G) for name in ARRAY_FIELDS}
    arrays.update({name: _check_array(r[name], f"{at}: {name}", OPTIONAL_DTYPES[name], G)
                   for name in OPTIONAL_ARRAYS if r.get(name) is not None})
    return arrays


def _check_trace(d: Any) -> list[dict[str, np.ndarray]]:
    """Check a whole trace dict; returns each record's decoded arrays. Raises TraceFormatError."""
    if not isinstance(d, dict):
        raise TraceFormatError(f"trace: the file holds {_kind(d)}; a trace is an object with "
                               f"\"format\": \"{FORMAT}\"")
    if "format" not in d:
        raise TraceFormatError(f"trace: no 'format' field; this is not a '{FORMAT}' file")
    if d["format"] != FORMAT:
        raise TraceFormatError(f"trace: format {_show(d['format'])} is not a '{FORMAT}' file")
    version = d.get("version")
    if not _is_int(version) or version != VERSION:
        raise TraceFormatError(f"trace: version {_show(version)} is not supported; allowed: {VERSION}")
    _object(d, "trace", TOP_KEYS, TOP_KEYS)
    G, n_blocks = _check_settings(d["settings"])
    _str(d["model"], "model", MAX_NAME_CHARS)
    _str(d["prompt"], "prompt", MAX_TEXT_CHARS)
    _ints(d["prompt_ids"], "prompt_ids", MAX_PROMPT_TOKENS, 0, MAX_TOKEN_ID)
    _int(d["mask_id"], "mask_id", 0, MAX_TOKEN_ID)
    tokens = _ints(d["tokens"], "tokens", G, 0, MAX_TOKEN_ID)
    if len(tokens) != G:
        raise _fail("tokens", f"{len(tokens)} tokens; expected gen_length = {G}")
    _str(d["text"], "text", MAX_TEXT_CHARS)
    _check_summary(d["summary"], G)
    _check_token_strings(d["token_strings"])
    records = _list(d["records"], "records", MAX_RECORDS)
    arrays = []
    decoded_by = np.full(G, -1, dtype=np.int64)
    nfe = forwards = 0
    for i, r in enumerate(records):
        arrays.append(_check_record(r, i, G, n_blocks))
        if r["step"] != i:
            raise TraceFormatError(f"record {i}: step {int(r['step'])}; expected {i} (steps are 0..n-1 in order)")
        for p in r["decoded"]:
            if decoded_by[p] >= 0:
                raise TraceFormatError(f"record {i}: decoded position {int(p)} was already decoded "
                                       f"by record {int(decoded_by[p])}")
            decoded_by[p] = i
        if r["nfe"] < nfe:
            raise TraceFormatError(f"record {i}: nfe {int(r['nfe'])} is less than the previous record's {nfe}")
        if r["forwards"] < forwards:
            raise TraceFormatError(f"record {i}: forwards {int(r['forwards'])} is less than the previous "
                                   f"record's {forwards}")
        nfe, forwards = int(r["nfe"]), int(r["forwards"])
    return arrays
