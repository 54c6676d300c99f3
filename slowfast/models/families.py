"""The model families the explorer offers, each in one line: what runs it, and whether it runs here.

``FAMILIES`` lists them (the embedded model, LLaDA-8B/1.5, Dream-7B, masked LMs, DiffusionGemma,
LLaDA2.x) with the known hub ids of each (``loading.KNOWN_MODELS``). Whether a model runs on
this machine is ``loading.check_memory``'s answer (weights + margin against the device's
memory: a GPU's total, or the memory a CPU has available), so the picker's notes and the
refusal before a load say the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .loading import (DIFFUSION_GEMMA, DREAM, KNOWN_MODELS, LLADA, LLADA2, MASKED_LM, MemoryCheck, check_memory,
                      memory_needed, parse_device)

EMBEDDED = "embedded"
ONE_GPU = 141e9  # bytes: the largest single GPU's memory we know (H200); a model needing more is spread, not run here


@dataclass(frozen=True)
class Family:
    key: str  # loading's family name (``ModelInfo.family``); "embedded" for the shipped model
    title: str
    runs: str  # what runs it, and with which samplers
    models: tuple[str, ...]  # its known hub ids (or "embedded")


def _ids(family: str) -> tuple[str, ...]:
    return tuple(name for name, info in KNOWN_MODELS.items() if info.family == family)


FAMILIES: tuple[Family, ...] = (
    Family(EMBEDDED, "Embedded (5M, ours)", "our transformer, our samplers and dLLM-Cache; shipped, offline",
           (EMBEDDED,)),
    Family(LLADA, "LLaDA-8B / LLaDA-1.5", "our transformer, our samplers and dLLM-Cache", _ids(LLADA)),
    Family(DREAM, "Dream-7B", "our transformer (Qwen2.5 shape, shifted logits), our samplers and dLLM-Cache",
           _ids(DREAM)),
    Family(MASKED_LM, "Masked LMs (ModernBERT chat dLLMs)", "transformers' own masked LM, our samplers, no cache",
           _ids(MASKED_LM)),
    Family(DIFFUSION_GEMMA, "DiffusionGemma", "transformers' own class and generate, its entropy_bound sampler "
           "(uniform noise, no mask)", _ids(DIFFUSION_GEMMA)),
    Family(LLADA2, "LLaDA2.0 / 2.1 (MoE)", "our block-causal MoE network (no remote code), its llada2 sampler "
           "(threshold with editing) and ours", _ids(LLADA2)),
)


def family_of(name: str) -> Optional[Family]:
    name = (name or "").strip()
    return next((f for f in FAMILIES if name in f.models), None)


def memory_text(n: int) -> str:
    return f"{n / 1e9:.0f} GB" if n >= 1e10 else f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def verdict(check: MemoryCheck) -> str:
    """A few words for a picker entry: whether the model runs here, else what it needs."""
    if check.parameters is None:
        return "size unknown until downloaded"
    if check.fits is None:
        return "memory of this machine unknown"
    dev = torch.device(check.device)
    if check.fits:
        slow = dev.type == "cpu" and check.parameters >= 1e9
        return f"runs here ({dev.type}{', seconds a forward' if slow else ''})"
    bf16 = memory_needed(check.parameters, torch.bfloat16)
    if bf16 > ONE_GPU:
        return f"needs about {memory_text(bf16)} of GPU memory (more than one GPU)"
    if dev.type == "cpu":
        return f"needs a GPU with about {memory_text(bf16)}"
    return f"needs about {memory_text(bf16)}, more than this GPU's {memory_text(check.available or 0)}"


def refusal(check: MemoryCheck) -> str:
    """The sentence that refuses a model this machine cannot hold (``check.fits`` is False)."""
    dev = torch.device(check.device)
    bf16 = memory_needed(check.parameters or 0, torch.bfloat16)
    where = ("this machine has no GPU and its CPU has " if dev.type == "cpu" else "this GPU has ") + \
        memory_text(check.available or 0)
    too_big = ", more than one GPU holds, and this explorer does not spread a model over GPUs" if bf16 > ONE_GPU else ""
    return (f"{check.name} cannot run here: it needs about {memory_text(check.needed or 0)} in {check.dtype} and "
            f"{where}; it needs a GPU with about {memory_text(bf16)} (bf16)" + too_big)


def family_line(family: Family, device: Optional[str | torch.device] = None) -> str:
    """``title: what runs it; whether it runs here``: its models against this machine's memory."""
    if family.key == EMBEDDED:
        return f"{family.title}: {family.runs}; runs on any CPU"
    if not family.models:
        return f"{family.title}: {family.runs}; no hub id listed (load a local folder)"
    checks = sorted((check_memory(m, device) for m in family.models), key=lambda c: c.parameters or 0)
    fit = [c for c in checks if c.fits]
    if len(fit) == len(checks):
        here = verdict(checks[-1])
    elif fit:
        here = f"{verdict(fit[-1])} up to {fit[-1].name.split('/')[-1]}; {checks[-1].name.split('/')[-1]} " \
               f"{verdict(checks[-1])}"
    else:
        here = verdict(checks[0])
    return f"{family.title}: {family.runs}; {here}"


def family_lines(device: Optional[str | torch.device] = None) -> list[str]:
    """One line per family (see ``family_line``), in ``FAMILIES``' order."""
    parse_device(device)  # a bad device fails here, once
    return [family_line(f, device) for f in FAMILIES]


__all__ = ["EMBEDDED", "FAMILIES", "Family", "family_line", "family_lines", "family_of", "refusal", "verdict"]
