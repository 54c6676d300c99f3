"""StepRecord / Trace: what one decoding run did, step by step, and its file format.

A trace file is UTF-8 JSON (see the README, "Trace file format"). Per-step arrays are
stored as base64 of their little-endian bytes with their dtype, so a saved trace loads
back bit for bit.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

FORMAT = "slowfast-trace"
VERSION = 1
ARRAY_FIELDS = {"confidence": np.float16, "argmax": np.int32}


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

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["span"] = list(self.span) if self.span is not None else None
        for name in ARRAY_FIELDS:
            d[name] = encode_array(getattr(self, name))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepRecord":
        d = dict(d)
        d["span"] = tuple(d["span"]) if d.get("span") is not None else None
        for name in ARRAY_FIELDS:
            d[name] = decode_array(d[name])
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
        if d.get("format") != FORMAT:
            raise ValueError(f"trace: format {d.get('format')!r} is not a {FORMAT!r} file")
        if d.get("version") != VERSION:
            raise ValueError(f"trace: version {d.get('version')!r} is not supported; allowed: {VERSION}")
        fields_ = {k: v for k, v in d.items() if k not in ("format", "version", "records")}
        return cls(records=[StepRecord.from_dict(r) for r in d["records"]], **fields_)

    def save(self, path: str | Path) -> Path:
        """Write the trace as JSON (atomically: a failed write leaves no half file)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"trace: {path} is not valid JSON ({exc})") from exc
        return cls.from_dict(data)

    @property
    def gen_length(self) -> int:
        return int(self.settings["gen_length"])

    def decoded_at(self) -> np.ndarray:
        """For each generated position, the step that unmasked it (-1: never)."""
        out = np.full(self.gen_length, -1, dtype=np.int64)
        for r in self.records:
            out[r.decoded] = r.step
        return out


def summarize(records: list[StepRecord], gen_length: int, answer_tokens: int, seconds: float) -> dict[str, Any]:
    """NFE, forwards, tokens fed, seconds and tokens/s (all gen_length positions / seconds)."""
    last = records[-1] if records else None
    return {
        "nfe": last.nfe if last else 0,
        "forwards": last.forwards if last else 0,
        "tokens_fed": int(sum(r.tokens_fed for r in records)),
        "seconds": seconds,
        "tokens_per_second": gen_length / seconds if seconds > 0 else 0.0,
        "answer_tokens": answer_tokens,
        "decoded": int(sum(len(r.decoded) for r in records)),
        "flops": float(sum(r.flops for r in records)),
    }
