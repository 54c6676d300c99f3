"""StepRecord / Trace: what one decoding run did, step by step, and its file format.

A trace file is UTF-8 JSON (see the README, "Trace file format"). Per-step arrays are
stored as base64 of their little-endian bytes with their dtype, so a saved trace loads
back bit for bit.

Trace files are also uploaded by strangers (the app replays them), so ``Trace.load`` and
``Trace.from_dict`` check everything against the documented format, within its limits,
before returning anything (``trace_format.py``: the format's facts, limits and validator): a
bad file raises ``TraceFormatError`` naming the field (and the record), never a raw exception,
and never costs more than its size allows.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .trace_format import (  # noqa: F401  (the limits and the error: re-exported for the data model's users)
    ARRAY_FIELDS, FORMAT, MAX_FILE_BYTES, MAX_GEN_LENGTH, OPTIONAL_ARRAYS, OPTIONAL_LISTS, VERSION, Fields,
    TraceFormatError, check_record, check_trace, parse_json, read_file, record_gen_length,
)

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
            gen_length = record_gen_length(d, index)
        arrays = check_record(d, index, gen_length, gen_length, FIELDS)  # blocks unknown: at most one per position
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
        arrays = check_trace(d, FIELDS)
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
        return cls.from_json(read_file(path))

    @classmethod
    def from_json(cls, raw: bytes | str) -> "Trace":
        """A trace from the text of a trace file (UTF-8 bytes or str), checked."""
        return cls.from_dict(parse_json(raw))

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
FIELDS = Fields(record=tuple(f.name for f in fields(StepRecord)), summary=SUMMARY_KEYS)  # what check_trace checks
