"""What a trace file may hold, checked: the format's facts, its limits and its validator.

``trace.py`` (the data model: StepRecord, Trace, Summary) writes its files with the facts
here (``FORMAT``, ``VERSION``, the arrays' dtypes) and reads them through ``read_file``,
``parse_json`` and ``check_trace``. Trace files are also uploaded by strangers (the app
replays them), so everything is checked against the documented format (the README, "Trace
file format"), within the limits below, before anything is built from it: a bad file raises
``TraceFormatError`` naming the field (and the record), never a raw exception, and never
costs more than its size allows. The data model's own field names (a record's, the
summary's) come in as ``Fields``, so they are written once, on the dataclasses.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Fields:
    """The data model's field names a file holds: a record's (``StepRecord``'s) and the
    summary's (``Summary``'s); ``trace.py`` passes them with every check."""

    record: tuple[str, ...]
    summary: tuple[str, ...]

    @property
    def required_record(self) -> tuple[str, ...]:
        """A record's fields every file has (the optional arrays and lists may be absent)."""
        return tuple(k for k in self.record if k not in (*OPTIONAL_ARRAYS, *OPTIONAL_LISTS))


# --- reading a file --------------------------------------------------------------------------------


def read_file(path: str | Path) -> bytes:
    """A trace file's bytes: its size is checked before it is read."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise TraceFormatError(too_big(size))
    with path.open("rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)  # a file that grows (or a device) is cut here
    if len(raw) > MAX_FILE_BYTES:
        raise TraceFormatError(too_big(len(raw)))
    return raw


def parse_json(raw: bytes | str) -> Any:
    """The JSON value of a trace file's text (UTF-8 bytes or str), its size and count of values
    checked before parsing."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_FILE_BYTES:
        raise TraceFormatError(too_big(len(raw)))
    items = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
    if items > MAX_JSON_ITEMS:
        raise TraceFormatError(f"trace: {items} JSON values; allowed: at most {MAX_JSON_ITEMS}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(f"trace: not UTF-8 text (invalid byte at offset {exc.start})") from None
    try:
        return json.loads(text)  # NaN / Infinity parse, and are refused by the field they are in
    except RecursionError:
        raise TraceFormatError("trace: JSON nested too deeply for a trace") from None
    except json.JSONDecodeError as exc:
        raise TraceFormatError(f"trace: not valid JSON ({exc})") from None
    except ValueError:  # e.g. an integer of more than 4300 digits
        raise TraceFormatError("trace: not valid JSON (a number too long)") from None


# --- checking a trace against the documented format ------------------------------------------------
# Messages name the field (``settings.gen_length``, ``record 3: decoded``) and show numbers,
# but never echo a file's text: the app shows them as Markdown.
TOP_KEYS = ("format", "version", "settings", "model", "prompt", "prompt_ids", "mask_id", "tokens", "text",
            "summary", "token_strings", "records")
SETTINGS_KEYS = ("sampler", "gen_length", "block_length", "steps", "temperature", "seed", "cfg_scale", "chat",
                 "params", "max_forwards_per_block", "cache")
CACHE_SETTINGS_KEYS = tuple(p.name for p in CACHE)
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


def too_big(size: int) -> str:
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
    from .engine import GenerationSettings  # here: the engine imports trace.py, which imports this module

    try:  # every parameter against its definition, the sampler's own checks, the fit to the layout
        GenerationSettings.from_dict(s).policy()
    except (ValueError, TypeError) as exc:  # their messages show only the values checked above
        raise _fail("settings", str(exc)) from None
    G = int(s["gen_length"])
    if G > MAX_GEN_LENGTH:  # this format's own limit
        raise _fail("settings.gen_length", f"{G} outside 1..{MAX_GEN_LENGTH}")
    return G, G // int(s["block_length"])


def _check_summary(s: Any, G: int, keys: tuple[str, ...]) -> None:
    _object(s, "summary", keys, keys)
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


def record_gen_length(d: Any, index: int) -> int:
    """A record read on its own: the generation length its confidence array has."""
    conf = d.get("confidence") if isinstance(d, dict) else None
    shape = conf.get("shape") if isinstance(conf, dict) else None
    if not (isinstance(shape, list) and len(shape) == 1):
        raise TraceFormatError(f"record {index}: confidence: expected an ARRAY of shape [gen_length]")
    return _int(shape[0], f"record {index}: confidence: shape[0]", 1, MAX_GEN_LENGTH)


def check_record(r: Any, i: int, G: int, n_blocks: int, names: Fields) -> dict[str, np.ndarray]:
    """Check one record on its own; returns its decoded arrays."""
    at = f"record {i}"
    _object(r, at, names.required_record, names.record)
    _int(r["step"], f"{at}: step", 0, MAX_RECORDS - 1)
    stage, stages = r["stage"], stage_names()
    if stage not in stages:
        raise _fail(f"{at}: stage", f"{_show(stage)} is not one of {', '.join(stages)}")
    _int(r["block"], f"{at}: block", 0, n_blocks - 1)
    _check_span(r["span"], at, G)
    if r["horizons"] is not None:
        _ints(r["horizons"], f"{at}: horizons", MAX_GEN_LENGTH, 0, G)
    if r["horizon_spread"] is not None:
        _number(r["horizon_spread"], f"{at}: horizon_spread")
    _check_decoded(r["decoded"], at, G)
    _int(r["fed_end"], f"{at}: fed_end", 0, G)
    _int(r["tokens_fed"], f"{at}: tokens_fed", 0, MAX_COUNT)
    _number(r["ms"], f"{at}: ms")
    _int(r["nfe"], f"{at}: nfe", 0, MAX_COUNT)
    _int(r["forwards"], f"{at}: forwards", 0, MAX_COUNT)
    _check_info(r["info"], at)
    _number(r["flops"], f"{at}: flops")
    if r["cache"] is not None:
        _check_cache_counts(r["cache"], at)
    for name in OPTIONAL_LISTS:
        if r.get(name) is not None:
            _ints(r[name], f"{at}: {name}", G, 0, G - 1)
    arrays = {name: _check_array(r[name], f"{at}: {name}", ARRAY_DTYPES[name], G) for name in ARRAY_FIELDS}
    arrays.update({name: _check_array(r[name], f"{at}: {name}", OPTIONAL_DTYPES[name], G)
                   for name in OPTIONAL_ARRAYS if r.get(name) is not None})
    return arrays


def _check_span(span: Any, at: str, G: int) -> None:
    if span is None:
        return
    if not isinstance(span, (list, tuple)) or len(span) != 2 or not all(_is_int(x) for x in span):
        raise _fail(f"{at}: span", f"expected null or two integers [start, end), got {_show(span)}")
    start, end = int(span[0]), int(span[1])
    if not 0 <= start <= end <= G:
        raise _fail(f"{at}: span", f"[{_show(start)}, {_show(end)}) is not within 0 <= start <= end <= {G}")


def _check_decoded(decoded: Any, at: str, G: int) -> None:
    for p in _list(decoded, f"{at}: decoded", G):
        if not _is_int(p):
            raise TraceFormatError(f"{at}: decoded position {_show(p)} is not an integer")
        if not 0 <= p < G:
            raise TraceFormatError(f"{at}: decoded position {_show(p)} outside 0..{G - 1}")


def _check_info(info: Any, at: str) -> None:
    """A record's policy extras: known ones by their kind (``INFO_TYPES``), others any short scalar."""
    for k, v in _object(info, f"{at}: info", max_len=MAX_EXTRAS).items():
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


def _check_cache_counts(cache: Any, at: str) -> None:
    """A record's dLLM-Cache statistics: one entry per layer in every list."""
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


def check_trace(d: Any, names: Fields) -> list[dict[str, np.ndarray]]:
    """Check a whole trace dict; returns each record's decoded arrays. Raises TraceFormatError."""
    _check_header(d)
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
    _check_summary(d["summary"], G, names.summary)
    _check_token_strings(d["token_strings"])
    return _check_records(_list(d["records"], "records", MAX_RECORDS), G, n_blocks, names)


def _check_header(d: Any) -> None:
    """An object that says it is a trace file of this version."""
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


def _check_records(records: list, G: int, n_blocks: int, names: Fields) -> list[dict[str, np.ndarray]]:
    """Each record on its own, then together: steps 0..n-1 in order, a position decoded once,
    counters that never go back."""
    arrays = []
    decoded_by = np.full(G, -1, dtype=np.int64)
    nfe = forwards = 0
    for i, r in enumerate(records):
        arrays.append(check_record(r, i, G, n_blocks, names))
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
