"""``bench gpu``'s small helpers: the peak table's lookup, number formats, the cache case of a
forward, interpolation between measured extents, the run's time budget and its clock."""
from __future__ import annotations

import gc
import re
import statistics
import time
from typing import Any, Callable, Optional, Sequence

import torch

from ...cache import CacheSettings
from ..common import sync
from .shapes import PEAK_BF16_DENSE


def peak_flops(gpu_name: Optional[str], override_tflops: Optional[float] = None) -> tuple[Optional[float], str]:
    """(peak dense bf16 FLOP/s, where it comes from) for ``gpu_name``; (None, why) when unknown."""
    if override_tflops is not None:
        return float(override_tflops) * 1e12, f"--peak-tflops {override_tflops:g}"
    if not gpu_name:
        return None, "no GPU: no peak to compare with (FLOP/s only)"
    for key, source, value in PEAK_BF16_DENSE:
        if key.lower() in gpu_name.lower():
            return value, source
    return None, f"{gpu_name}: not in the peak table (FLOP/s only; give --peak-tflops)"


def count_text(n: int) -> str:
    return f"{n / 1e9:.3f}B" if n >= 1e9 else f"{n / 1e6:.3f}M"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag}: {text!r} is not allowed; use comma-separated whole numbers") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{flag}: {text!r} is not allowed; use comma-separated whole numbers >= 1")
    return sorted(set(values))


def cache_case(settings: CacheSettings, forward: int) -> str:
    """The dLLM-Cache case of the ``forward``-th forward (1-based) past layer 0: the first
    forward and every forward where both intervals fall refresh everything."""
    if forward == 1:
        return "both"
    p, r = (forward - 1) % settings.kp == 0, (forward - 1) % settings.kr == 0
    return "both" if p and r else "response" if r else "prompt" if p else "neither"


def interpolate(points: Sequence[tuple[int, float]], extent: int) -> float:
    """ms of a forward feeding ``extent`` generated positions: piecewise linear between the
    measured (extent, ms) points, clamped to the nearest one outside them."""
    pts = sorted(points)
    if not pts:
        raise ValueError("no measured points to interpolate from")
    if extent <= pts[0][0]:
        return pts[0][1]
    if extent >= pts[-1][0]:
        return pts[-1][1]
    for (e0, m0), (e1, m1) in zip(pts, pts[1:]):
        if e0 <= extent <= e1:
            return m0 if e1 == e0 else m0 + (m1 - m0) * (extent - e0) / (e1 - e0)
    return pts[-1][1]  # not reached


class Budget:
    """The run's hard time budget: a part runs only if its estimate fits in what is left."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60.0
        self.t0 = time.perf_counter()
        self.notes: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def allows(self, part: str, estimate_s: float = 0.0) -> bool:
        if self.left() > estimate_s:
            return True
        self.notes.append(f"skipped {part}: {max(self.left(), 0):.0f} s left of the {self.seconds / 60:g}-minute "
                          f"budget, it needs about {estimate_s:.0f} s")
        print(f"  {self.notes[-1]}", flush=True)
        return False


class Clock:
    """Times calls without a host synchronisation between them: CUDA events on a GPU (read after
    one synchronisation at the end), ``perf_counter`` on a CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.pending: list[Any] = []

    def time(self, fn: Callable[[], Any]) -> Any:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            self.pending.append((start, end))
        else:
            t0 = time.perf_counter()
            out = fn()
            self.pending.append((time.perf_counter() - t0) * 1000.0)
        return out

    def read(self) -> list[float]:
        """ms of every call since the last read, in order."""
        if self.cuda:
            sync(self.device)
            ms = [float(s.elapsed_time(e)) for s, e in self.pending]
        else:
            ms = [float(v) for v in self.pending]
        self.pending = []
        return ms


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


