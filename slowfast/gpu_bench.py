"""``python -m slowfast bench gpu`` (or ``python -m slowfast.gpu_bench``): per-forward times of a
LLaDA-8B-shaped model on one GPU, the autoregressive anchor, and a projection from them.

All in one process, within a hard time budget (``--max-minutes``, default 8; a part that would
not fit is skipped with a note):

1. Our ``Transformer`` built from LLaDA-8B-Instruct's official ``config.json`` through the
   loader's own ``llada_config`` (random weights, created on the device in the run's dtype, no
   CPU copy, no download). For each generation length G after a P-token prompt: ms of a full
   forward (P + G tokens, logits for the G generated rows as the engine asks), of SlowFast's
   truncated fast-stage forward (P + span-end tokens), and of dLLM-Cache forwards (K_p 100,
   K_r 5, rho 0.25) run in schedule order, each timed forward classified by the case the
   schedule gives it (the steady case is V-verify: neither refresh). Model FLOPs utilisation
   of the full forward from ``Transformer.forward_flops`` against the GPU's dense bf16 peak.
   Further extents are timed so that forwards of other lengths can be interpolated.
2. What is cheap to try for speed, each measured against eager on the same shapes: the
   uncached forward replayed as a CUDA graph, and (``--compile``) ``torch.compile``.
3. The anchor: transformers' ``LlamaForCausalLM`` with Llama-3-8B's shape (random weights),
   ``generate`` with its KV cache, greedy, exactly N new tokens after the same prompt length:
   tokens/s (``--compile``: also its static cache, which transformers compiles).
4. A projection, labelled as one: for an NFE/tokens-fed profile (the default stated in
   ``default_profile``, or ``--profile`` with a trace file or a summary), projected tokens/s
   of the baseline, SlowFast and SlowFast + cache = gen_length / (sum over the profile's
   forwards of the measured ms of that forward's kind and length).

Timing: on a GPU, CUDA events around each forward and one synchronisation per batch of
forwards (none between them); on a CPU, ``time.perf_counter``. Warm-up forwards first, then
the median of ``--repeats``. ``--small`` is a shrunken shape for CPUs and the tests.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from .cache import CacheSettings, FeatureCache
from .models.transformer import ModelConfig, Transformer

PROJECTION_LABEL = "projection from measured per-forward times (not a measured generation)"

# LLaDA-8B-Instruct's config.json as published (GSAI-ML/LLaDA-8B-Instruct); read from a copy of
# the hub file (github.com/yinj66/support_basis, LLaDA-8B-Instruct-B&S-light/config.json), and it
# matches loading.LLADA_8B and docs/algorithms.md section 5. Built through loading.llada_config,
# the loader's own path from a config.json to our ModelConfig.
LLADA_8B_CONFIG_JSON: dict[str, Any] = {
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
    "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 4096,
    "embedding_dropout": 0.0, "embedding_size": 126464, "eos_token_id": 126081, "flash_attention": False,
    "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
    "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
    "layer_norm_with_affine": True, "mask_token_id": 126336, "max_sequence_length": 4096,
    "mlp_hidden_size": 12288, "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None,
    "n_heads": 32, "n_kv_heads": 32, "n_layers": 32, "pad_token_id": 126081, "precision": "amp_bf16",
    "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True,
    "rope_theta": 500000.0, "scale_logits": False, "use_cache": False, "vocab_size": 126464,
    "weight_tying": False,
}
LLADA_8B_SOURCE = ("GSAI-ML/LLaDA-8B-Instruct config.json (copy read at github.com/yinj66/support_basis, "
                   "LLaDA-8B-Instruct-B&S-light/config.json); built with slowfast.models.loading.llada_config")

# Meta-Llama-3-8B's config.json fields that set its shape (as published; the Instruct model has
# the same shape, eos 128009).
LLAMA3_8B_CONFIG: dict[str, Any] = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192, "rope_theta": 500000.0,
    "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False,
    "mlp_bias": False, "bos_token_id": 128000, "eos_token_id": 128001, "pad_token_id": 128001,
}
LLAMA3_8B_SOURCE = "meta-llama/Meta-Llama-3-8B config.json (shape fields), transformers' LlamaConfig"

# The shrunken shapes of --small (CPU runs and the tests): same structure, tiny sizes.
SMALL_LLADA: dict[str, Any] = {
    "d_model": 64, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "mlp_hidden_size": 128, "vocab_size": 512,
    "embedding_size": 512, "max_sequence_length": 4096, "rope_theta": 500000.0, "mask_token_id": 511,
    "eos_token_id": 510,
}
SMALL_LLAMA: dict[str, Any] = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 4096, "rope_theta": 500000.0,
    "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 0,
    "eos_token_id": 1, "pad_token_id": 1,
}

# Dense (no 2:4 sparsity) bf16 tensor-core peaks, FLOP/s, from NVIDIA's datasheets (the
# "with sparsity" figure halved): H100 SXM5 and H200 989.4 TFLOP/s (the same GH100 compute),
# H100 PCIe 756, H100 NVL 835, A100 (SXM4 and PCIe) 312. Matched on torch's device name, the
# more specific entries first; an unknown GPU gets FLOP/s only (or --peak-tflops).
PEAK_BF16_DENSE: list[tuple[str, str, float]] = [
    ("H200", "NVIDIA H200 (SXM), datasheet dense BF16", 989.4e12),
    ("H100 PCIe", "NVIDIA H100 PCIe, datasheet dense BF16", 756e12),
    ("H100 NVL", "NVIDIA H100 NVL, datasheet dense BF16", 835e12),
    ("H100", "NVIDIA H100 SXM5, datasheet dense BF16", 989.4e12),
    ("A100", "NVIDIA A100, datasheet dense BF16", 312e12),
]

FLOPS_METHOD = ("Transformer.forward_flops: matmul FLOPs of the Q/K/V and output projections, attention "
                "(scores and weighted sum, 4*T*d per query row), the SwiGLU FFN, and the output head over the "
                "generated rows only (the engine asks for those logits); norms, RoPE and softmax not counted")

CASES = ("both", "response", "prompt", "neither")
CASE_NAMES = {
    "both": "prompt + response refresh",
    "response": "response refresh",
    "prompt": "prompt refresh (response V-verified)",
    "neither": "V-verify (neither refresh)",
}


# --- small helpers --------------------------------------------------------------------------------

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


def check_output_path(path: str, flag: str) -> None:
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{flag}: {path} is a folder; allowed: a file path")
    if not target.parent.is_dir():
        raise ValueError(f"{flag}: the folder {target.parent} does not exist; create it first")
    if not os.access(target.parent, os.W_OK):
        raise ValueError(f"{flag}: the folder {target.parent} is not writable")


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
            torch.cuda.synchronize(self.device)
            ms = [float(s.elapsed_time(e)) for s, e in self.pending]
        else:
            ms = [float(v) for v in self.pending]
        self.pending = []
        return ms


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- the models -------------------------------------------------------------------------------------

def llada_config(small: bool) -> ModelConfig:
    """Our ModelConfig of LLaDA-8B-Instruct (through the loader's own function) or the small shape."""
    if small:
        return ModelConfig.from_dict(dict(SMALL_LLADA))
    from .models.loading import llada_config as from_config_json

    return from_config_json(dict(LLADA_8B_CONFIG_JSON), Path("GSAI-ML/LLaDA-8B-Instruct/config.json"))


@torch.no_grad()
def random_transformer(cfg: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Transformer:
    """Our Transformer with random weights allocated on ``device`` in ``dtype`` directly (built on
    the meta device, then ``to_empty``): normal(0, 0.02) matrices, unit norm weights, zero biases."""
    with torch.device("meta"):
        net = Transformer(cfg)
    net = net.to(dtype=dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in net.named_parameters():
        if p.dim() >= 2:
            p.normal_(0.0, 0.02, generator=gen)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)
    return net.eval()


def llama_config(small: bool):
    from transformers import LlamaConfig

    return LlamaConfig(**(SMALL_LLAMA if small else LLAMA3_8B_CONFIG))


def random_llama(config, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """transformers' LlamaForCausalLM from ``config`` with random weights, built on ``device``."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    return model.to(device).eval()


# --- measurements of our transformer ---------------------------------------------------------------

class LengthBench:
    """The forwards of one generation length G after a P-token prompt, on one canvas."""

    def __init__(self, net: Transformer, device: torch.device, P: int, G: int, repeats: int, warmup: int,
                 settings: CacheSettings, seed: int):
        self.net, self.device, self.P, self.G = net, device, P, G
        self.repeats, self.warmup, self.settings = repeats, warmup, settings
        cfg = net.cfg
        gen = torch.Generator(device="cpu").manual_seed(seed + G)
        mask = cfg.mask_token_id if 0 <= cfg.mask_token_id < cfg.vocab_size else cfg.vocab_size - 1
        prompt = torch.randint(0, cfg.vocab_size, (1, P), generator=gen)
        self.canvas = torch.cat([prompt, torch.full((1, G), mask, dtype=torch.long)], dim=1).to(device)
        self.clock = Clock(device)

    def tokens(self, extent: int) -> torch.Tensor:
        return self.canvas[:, : self.P + extent]

    def flops(self, extent: int, cache: Optional[FeatureCache] = None) -> Optional[float]:
        try:
            return float(self.net.forward_flops(1, self.P + extent, cache, logits_from=self.P))
        except Exception:  # noqa: BLE001 - a reporting extra; the timing stands without it
            return None

    @torch.inference_mode()
    def uncached(self, extent: int, forward: Optional[Callable] = None) -> dict[str, Any]:
        """Median ms of the uncached forward over P + ``extent`` tokens (``forward``: another
        callable of (tokens) -> logits, e.g. a compiled one)."""
        x = self.tokens(extent)
        call = forward or (lambda t: self.net(t, logits_from=self.P))
        for _ in range(self.warmup):
            self.clock.time(lambda: call(x))
        self.clock.read()
        for _ in range(self.repeats):
            self.clock.time(lambda: call(x))
        ms = self.clock.read()
        return {"extent": extent, "tokens_fed": self.P + extent, "ms": median(ms), "ms_all": ms,
                "flops": self.flops(extent)}

    @torch.inference_mode()
    def cached(self, extent: int) -> dict[str, Any]:
        """dLLM-Cache forwards in schedule order: the first forward full (it fills the cache),
        then forwards over P + ``extent`` tokens, each timed and classified by the case the
        schedule gives it; a warm-up sequence first. The both-refresh case is also timed as the
        first forward of fresh caches at this extent. Returns per case the median ms."""
        s, P, G, L = self.settings, self.P, self.G, self.net.cfg.n_layers
        wanted = max(self.repeats, 1)
        per_round = max(s.kr - 1, 1)  # V-verify forwards per K_r forwards
        n = 1 + s.kr * max(1, math.ceil(wanted / per_round)) if s.kr > 1 else 1 + wanted
        times: dict[str, list[float]] = {}
        rows: dict[str, float] = {}
        flops: dict[str, Optional[float]] = {}
        for timed in (False, True):
            cache = FeatureCache(s, P, G, L)
            count = n if timed else min(n, 1 + 2 * s.kr)
            cases = []
            for f in range(1, count + 1):
                cache.begin_forward()
                x = self.tokens(G if f == 1 else extent)
                self.clock.time(lambda: self.net(x, cache=cache, logits_from=P))
                cases.append(cache_case(s, f))
                if timed and f > 1 and cases[-1] not in rows:
                    rows[cases[-1]] = recomputed_share(cache, P + extent)
                    flops[cases[-1]] = self.flops(extent, cache)
            ms = self.clock.read()
            if timed:
                for case, m in list(zip(cases, ms))[1:]:
                    times.setdefault(case, []).append(m)
            clear(cache)
        both = []
        for i in range(self.warmup + wanted):  # fresh caches: their first forward refreshes everything
            cache = FeatureCache(s, P, G, L)
            cache.begin_forward()
            x = self.tokens(extent)
            self.clock.time(lambda: self.net(x, cache=cache, logits_from=P))
            if i == 0:
                rows["both"] = recomputed_share(cache, P + extent)
                flops["both"] = self.flops(extent, cache)
            both.append(self.clock.read()[0])
            clear(cache)
        times["both"] = both[self.warmup:]
        out = {}
        for case in CASES:
            if case in times:
                out[case] = {"case": CASE_NAMES[case], "extent": extent, "tokens_fed": P + extent,
                             "ms": median(times[case]), "ms_all": times[case], "samples": len(times[case]),
                             "rows_recomputed": rows.get(case), "flops": flops.get(case)}
        return out

    @torch.inference_mode()
    def cuda_graph(self, extent: int) -> dict[str, Any]:
        """The uncached forward captured once as a CUDA graph and replayed (static shapes)."""
        x = self.tokens(extent).clone()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.net(x, logits_from=self.P)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.net(x, logits_from=self.P)
        try:
            return self.uncached(extent, forward=lambda _t: graph.replay())
        finally:
            graph.reset()  # the graph's memory goes back before the next capture
            free_memory(self.device)


COMPILE_METHOD = ("torch.compile of each transformer block (regional compilation, inductor's default mode, "
                  "dynamic=False: one compiled graph per input shape serves all the identical blocks); the "
                  "embedding and the output head stay eager, the cached path (run_block) is not compiled")


def compile_blocks(net: Transformer) -> None:
    """Compile every block in place (``nn.Module.compile``); raises dynamo's recompile limit so
    that each timed shape gets its own graph instead of a silent fallback to eager."""
    try:
        import torch._dynamo

        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(int(getattr(torch._dynamo.config, name)), 64))
    except Exception:  # noqa: BLE001 - only a limit; compilation works without it
        pass
    for block in net.transformer["blocks"]:
        block.compile(dynamic=False)


def recomputed_share(cache: FeatureCache, rows: int) -> Optional[float]:
    """Share of (rows x layers) recomputed in the cache's last forward, from its stats if it has them."""
    stats = getattr(cache, "last_stats", None) or []
    try:
        done = sum(s.prompt_recomputed + s.response_recomputed for s in stats)
        return done / (rows * len(stats)) if stats else None
    except AttributeError:
        return None


def clear(cache: FeatureCache) -> None:
    if hasattr(cache, "clear"):
        cache.clear()


def rate(entry: dict[str, Any], peak: Optional[float]) -> None:
    """Adds achieved TFLOP/s (and MFU against ``peak``) to a timing entry."""
    if entry.get("flops") and entry.get("ms"):
        per_s = entry["flops"] / (entry["ms"] / 1000.0)
        entry["tflops_per_s"] = per_s / 1e12
        entry["mfu"] = per_s / peak if peak else None


def extents_for(G: int, span: int) -> list[int]:
    """Extents timed without the cache (for interpolation): the span, G/8, G/4, G/2, 3G/4, G."""
    return sorted({e for e in (span, G // 8, G // 4, G // 2, 3 * G // 4, G) if 1 <= e <= G})


def cached_extents_for(G: int, span: int) -> list[int]:
    return sorted({e for e in (span, G // 2, G) if 1 <= e <= G})


# --- the profile and the projection ------------------------------------------------------------------

DEFAULT_PROFILE_SOURCE = (
    "The paper's GSM8K setting: gen_length = block_length (one block), and the baseline at steps = gen_length "
    "(one token per forward: gen_length full forwards). SlowFast's forwards are an assumed cycle shape, since the "
    "paper reports times, not forward counts: 8 cycles, each 6 exploration forwards (full; the reference code runs "
    "all 6), one full fast-stage forward, then 3 fast-stage forwards truncated at the span end, k/8 of the "
    "generation in cycle k: 80 forwards, a 3.20x NFE reduction at gen 256 (the paper's measured GSM8K time "
    "speedup, RTX 4090; docs/algorithms.md section 2). SlowFast + cache: the same forwards under the cache "
    "schedule. Pass --profile with a trace of a real run to replace the assumption.")


def default_profile() -> dict[str, Any]:
    """The default NFE / tokens-fed profile (``DEFAULT_PROFILE_SOURCE``), per forward as the
    fraction of the generation it feeds."""
    slowfast: list[float] = []
    for k in range(1, 9):
        slowfast += [1.0] * 7 + [k / 8] * 3
    return {"name": "default: the paper's GSM8K setting, an assumed SlowFast cycle shape",
            "source": DEFAULT_PROFILE_SOURCE, "baseline": None,  # gen_length full forwards at every length
            "slowfast": slowfast, "slowfast_cache": None}  # None: the slowfast forwards


def load_profile(path: str) -> dict[str, Any]:
    """A profile from ``path``: a trace file (``Trace.save``'s format: its records' ``fed_end``
    per forward), or a JSON object with ``baseline`` / ``slowfast`` / ``slowfast_cache`` each
    either a list of fractions of the generation fed per forward, or a summary ``{"nfe",
    "tokens_fed", "prompt_length", "gen_length"}`` (then every forward is taken to feed the
    mean)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--profile: {path} cannot be read as JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--profile: {path} holds no JSON object")
    if raw.get("format") == "slowfast-trace" or "records" in raw:
        return profile_from_trace(raw, path)
    profile: dict[str, Any] = {"name": str(raw.get("name", Path(path).name)),
                               "source": str(raw.get("source", f"--profile {path}")),
                               "baseline": None, "slowfast": None, "slowfast_cache": None}
    for key in ("baseline", "slowfast", "slowfast_cache"):
        if raw.get(key) is not None:
            profile[key] = fractions_of(raw[key], f"--profile {path}: {key}")
    if profile["slowfast"] is None:
        raise ValueError(f"--profile {path}: needs \"slowfast\" (fractions fed per forward, or a summary)")
    return profile


def fractions_of(value: Any, where: str) -> list[float]:
    if isinstance(value, list):
        if not value or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1
                                for v in value):
            raise ValueError(f"{where}: a list of fractions in (0, 1] per forward is expected")
        return [float(v) for v in value]
    if isinstance(value, dict):
        try:
            nfe, fed = int(value["nfe"]), float(value["tokens_fed"])
            P0, G0 = int(value["prompt_length"]), int(value["gen_length"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: a summary needs nfe, tokens_fed, prompt_length and gen_length") from None
        if nfe < 1 or G0 < 1 or P0 < 0:
            raise ValueError(f"{where}: nfe and gen_length must be >= 1, prompt_length >= 0")
        mean = min(max((fed / nfe - P0) / G0, 1.0 / G0), 1.0)
        return [mean] * nfe
    raise ValueError(f"{where}: a list of fractions or a summary object is expected")


def profile_from_trace(raw: dict[str, Any], path: str) -> dict[str, Any]:
    try:
        G0 = int(raw["settings"]["gen_length"])
        fed = [int(r["fed_end"]) for r in raw["records"]]
        sampler = str(raw["settings"].get("sampler", "?"))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"--profile {path}: a trace needs settings.gen_length and records[].fed_end") from None
    if G0 < 1 or not fed or not all(0 < f <= G0 for f in fed):
        raise ValueError(f"--profile {path}: fed_end must be 1..gen_length in every record")
    fractions = [f / G0 for f in fed]
    name = f"trace {Path(path).name} ({sampler}, gen {G0}, {len(fed)} forwards)"
    profile = {"name": name, "source": f"--profile {path}: each record's fed_end / gen_length, in order",
               "baseline": None, "slowfast": fractions, "slowfast_cache": None}
    if sampler == "baseline":
        profile["baseline"] = fractions
    return profile


def project(G: int, P: int, fractions: Sequence[float], cached: bool, settings: CacheSettings,
            uncached_points: Sequence[tuple[int, float]],
            cached_points: dict[str, Sequence[tuple[int, float]]], notes: list[str]) -> dict[str, Any]:
    """Projected time of one generation: the sum over its forwards (in order, for the cache
    schedule) of the measured ms of that forward's kind at its extent (interpolated)."""
    groups: dict[tuple[str, Optional[str], int], dict[str, Any]] = {}
    total_ms, fed = 0.0, 0
    for i, frac in enumerate(fractions, 1):
        extent = min(max(int(round(frac * G)), 1), G)
        if cached:
            case = cache_case(settings, i)
            use = case if cached_points.get(case) else "both"
            if use != case:
                note = f"gen {G}: {CASE_NAMES[case]} forwards were not measured; counted at the both-refresh time"
                if note not in notes:
                    notes.append(note)
            ms = interpolate(cached_points[use], extent)
            key = ("cached", case, extent)
        else:
            ms = interpolate(uncached_points, extent)
            key = ("full" if extent == G else "truncated", None, extent)
        g = groups.setdefault(key, {"kind": key[0], "case": key[1], "extent": extent, "tokens_fed": P + extent,
                                    "count": 0, "ms": ms})
        g["count"] += 1
        total_ms += ms
        fed += P + extent
    return {"nfe": len(fractions), "tokens_fed": fed, "ms": total_ms, "seconds": total_ms / 1000.0,
            "tokens_per_s": G / (total_ms / 1000.0) if total_ms > 0 else None, "forwards": list(groups.values())}


def projections(G: int, P: int, profile: dict[str, Any], settings: CacheSettings, length: dict[str, Any],
                anchor_tps: Optional[float], notes: list[str]) -> dict[str, Any]:
    uncached_points = [(e["extent"], e["ms"]) for e in length["extents"]["no_cache"]]
    cached_points: dict[str, list[tuple[int, float]]] = {}
    for e in length["extents"]["cache"]:
        for case, entry in e.items():
            cached_points.setdefault(case, []).append((entry["extent"], entry["ms"]))
    sf = profile["slowfast"]
    configs = [("baseline", profile["baseline"] or [1.0] * G, False),
               ("slowfast", sf, False),
               ("slowfast + cache", profile["slowfast_cache"] or sf, True)]
    out: dict[str, Any] = {"label": PROJECTION_LABEL, "gen_length": G, "prompt_length": P, "configs": []}
    if not cached_points:
        configs = configs[:2]
        notes.append(f"gen {G}: no cached forwards measured; SlowFast + cache not projected")
    for name, fractions, cached in configs:
        p = project(G, P, fractions, cached, settings, uncached_points, cached_points, notes)
        p["config"] = name
        out["configs"].append(p)
    base = out["configs"][0]["tokens_per_s"]
    for p in out["configs"]:
        p["x_baseline"] = p["tokens_per_s"] / base if base and p["tokens_per_s"] else None
        p["x_anchor"] = p["tokens_per_s"] / anchor_tps if anchor_tps and p["tokens_per_s"] else None
    return out


# --- the anchor ----------------------------------------------------------------------------------------

def bench_anchor(device: torch.device, dtype: torch.dtype, small: bool, P: int, new_tokens: int, repeats: int,
                 compile_static: bool, budget: Budget, seed: int) -> dict[str, Any]:
    """transformers' LlamaForCausalLM (random weights) ``generate``: greedy, KV cache, exactly
    ``new_tokens`` new tokens after a P-token prompt. Whole-call wall time (prefill included) and
    the prefill alone (one new token), each the median of ``repeats`` after a warm-up."""
    import transformers

    config = llama_config(small)
    model = random_llama(config, device, dtype, seed)
    params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator(device="cpu").manual_seed(seed + 7)
    ids = torch.randint(2, config.vocab_size, (1, P), generator=gen).to(device)
    mask = torch.ones_like(ids)
    theta = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    result: dict[str, Any] = {
        "model": "LlamaForCausalLM, Llama-3-8B shape" if not small else "LlamaForCausalLM, small shape",
        "config_source": LLAMA3_8B_SOURCE if not small else "--small",
        "config": {k: getattr(config, k, None) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                         "num_attention_heads", "num_key_value_heads",
                                                         "vocab_size", "max_position_embeddings")},
        "rope_theta": theta, "parameters": params, "transformers": transformers.__version__,
        "attention": getattr(model.config, "_attn_implementation", None),
        "prompt_length": P, "new_tokens": new_tokens, "variants": [],
    }

    def run(n: int, **kw) -> tuple[float, int]:
        sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 pad_token_id=config.pad_token_id, **kw)
        sync(device)
        return time.perf_counter() - t0, int(out.shape[1] - P)

    variants = [("eager, DynamicCache (generate's default)", {}, 0.0)]
    if compile_static:
        name = ("static cache, decode step compiled by transformers (its auto-compile on CUDA)"
                if device.type == "cuda" else "static cache (transformers compiles only on CUDA)")
        variants.append((name, {"cache_implementation": "static"}, 180.0 if device.type == "cuda" else 60.0))
    for name, kw, extra in variants:
        if extra and not budget.allows(f"anchor variant '{name}'", extra):
            continue
        try:
            t_first, _ = run(new_tokens, **kw)  # warm-up (and, compiled, the compilation)
            run(1, **kw)
            whole, prefill, made = [], [], []
            for _ in range(repeats):
                s, n = run(new_tokens, **kw)
                whole.append(s)
                made.append(n)
                prefill.append(run(1, **kw)[0])
        except Exception as exc:  # noqa: BLE001 - a variant that fails is reported, the rest stands
            budget.notes.append(f"anchor variant '{name}' failed: {type(exc).__name__}: {exc}")
            continue
        w, pf = median(whole), median(prefill)
        result["variants"].append({
            "name": name, "seconds": w, "seconds_all": whole, "first_call_seconds": t_first,
            "new_tokens_made": made, "tokens_per_s": new_tokens / w, "prefill_ms": pf * 1000.0,
            "decode_tokens_per_s": (new_tokens - 1) / (w - pf) if w > pf and new_tokens > 1 else None,
        })
        print(f"  anchor {name}: {new_tokens / w:.1f} tok/s ({w:.3f} s for {new_tokens} tokens, prefill "
              f"{pf * 1000:.1f} ms)", flush=True)
    model = None  # the anchor's weights go before anything else runs
    free_memory(device)
    best = [v["tokens_per_s"] for v in result["variants"]]
    result["tokens_per_s"] = result["variants"][0]["tokens_per_s"] if result["variants"] else None
    result["best_tokens_per_s"] = max(best) if best else None
    return result


# --- the run ------------------------------------------------------------------------------------------

def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Every setting checked and defaulted before anything is built."""
    from .models.loading import parse_device, parse_dtype

    small = bool(args.small)
    device = parse_device(args.device)
    if device.type == "cpu" and not small:
        raise ValueError("--device cpu: the LLaDA-8B shape needs 16 GB and seconds per forward on a CPU; "
                         "use --small for the shrunken shape (or a CUDA device)")
    dtype = parse_dtype(args.dtype, device)
    gens = int_list(args.gen_lengths if args.gen_lengths is not None else ("128,256" if small else "256,1024"),
                    "--gen-lengths")
    P = args.prompt_length if args.prompt_length is not None else (16 if small else 900)
    span = args.span if args.span is not None else (16 if small else 32)
    repeats = args.repeats if args.repeats is not None else (3 if small else 10)
    warmup = args.warmup if args.warmup is not None else 2
    anchor_tokens = args.anchor_tokens if args.anchor_tokens is not None else (max(gens) if small else 256)
    anchor_repeats = args.anchor_repeats if args.anchor_repeats is not None else (1 if small else 3)
    for value, flag, low in ((P, "--prompt-length", 1), (span, "--span", 1), (repeats, "--repeats", 1),
                             (warmup, "--warmup", 0), (anchor_tokens, "--anchor-tokens", 1),
                             (anchor_repeats, "--anchor-repeats", 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{flag}: {value!r} is not allowed; it must be a whole number >= {low}")
    if span > min(gens):
        raise ValueError(f"--span: {span} is longer than the shortest generation ({min(gens)})")
    if not args.max_minutes > 0:
        raise ValueError(f"--max-minutes: {args.max_minutes!r} is not allowed; it must be > 0")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise ValueError(f"--peak-tflops: {args.peak_tflops!r} is not allowed; it must be > 0")
    settings = CacheSettings(kp=args.kp, kr=args.kr, rho=args.rho)
    cfg = llada_config(small)
    if P + max(gens) > cfg.max_sequence_length:
        raise ValueError(f"--prompt-length + --gen-lengths: {P} + {max(gens)} exceeds the model's context "
                         f"({cfg.max_sequence_length})")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    paths = {}
    for flag, value in (("--out", args.out), ("--md", args.md)):
        if value:
            path = value.replace("{gpu}", slug(gpu or "cpu"))
            check_output_path(path, flag)
            paths[flag] = path
    profile = load_profile(args.profile) if args.profile else default_profile()
    return dict(small=small, device=device, dtype=dtype, gens=gens, P=P, span=span, repeats=repeats, warmup=warmup,
                anchor_tokens=anchor_tokens, anchor_repeats=anchor_repeats, settings=settings, cfg=cfg, gpu=gpu,
                out=paths.get("--out"), md=paths.get("--md"), profile=profile)


def device_info(device: torch.device) -> dict[str, Any]:
    try:
        from .bench import machine

        info = machine(device)
    except Exception:  # noqa: BLE001 - the helper is optional; the essentials follow
        import platform

        info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                     "capability": f"{props.major}.{props.minor}", "sm_count": props.multi_processor_count,
                     "gpu_memory_gib": round(props.total_memory / 2**30, 1)})
    return info


def machine_text(m: dict[str, Any]) -> str:
    try:
        from .bench import machine_line

        line = machine_line(m)
    except Exception:  # noqa: BLE001
        line = f"{m.get('gpu') or m.get('device')} | torch {m.get('torch')}"
    if m.get("cuda"):
        line += (f" | CUDA {m['cuda']}, compute capability {m['capability']}, {m['sm_count']} SMs, "
                 f"{m['gpu_memory_gib']} GiB")
    return line


def run_benchmark(args: argparse.Namespace, command: str) -> dict[str, Any]:
    budget = Budget(args.max_minutes)
    r = resolve(args)
    device, dtype, settings, cfg, P = r["device"], r["dtype"], r["settings"], r["cfg"], r["P"]
    peak, peak_source = peak_flops(r["gpu"], args.peak_tflops)
    mach = device_info(device)
    dt_name = str(dtype).replace("torch.", "")
    result: dict[str, Any] = {
        "title": "LLaDA-8B-shaped forwards, the autoregressive anchor, and a projection",
        "command": command, "machine": mach, "gpu": r["gpu"],
        "settings": {"device": str(device), "dtype": dt_name, "small": r["small"], "prompt_length": P,
                     "gen_lengths": r["gens"], "span": r["span"], "repeats": r["repeats"], "warmup": r["warmup"],
                     "cache": {"kp": settings.kp, "kr": settings.kr, "rho": settings.rho},
                     "compile": bool(args.compile), "cuda_graphs": device.type == "cuda" and not args.no_cuda_graphs,
                     "max_minutes": args.max_minutes, "seed": args.seed,
                     "timer": "CUDA events, one synchronisation per batch of forwards" if device.type == "cuda"
                     else "time.perf_counter per forward"},
        "model": {"name": "LLaDA-8B-Instruct shape, random weights" if not r["small"] else "small LLaDA shape",
                  "config_source": LLADA_8B_SOURCE if not r["small"] else "--small",
                  "config": cfg.to_dict()},
        "flops_method": FLOPS_METHOD,
        "peak_flops": {"value": peak, "source": peak_source},
        "lengths": [], "anchor": None, "profile": None, "projections": [], "notes": budget.notes,
    }
    print(f"machine: {machine_text(mach)}", flush=True)
    print(f"peak: {peak_source}" + (f" = {peak / 1e12:.1f} TFLOP/s" if peak else ""), flush=True)
    t0 = time.perf_counter()
    net = random_transformer(cfg, device, dtype, args.seed)
    sync(device)
    result["model"]["parameters"] = net.num_parameters()
    result["model"]["build_seconds"] = time.perf_counter() - t0
    print(f"model: {result['model']['name']}: {count_text(net.num_parameters())} parameters, {dt_name}, built on "
          f"{device} in {result['model']['build_seconds']:.1f} s", flush=True)

    benches: dict[int, LengthBench] = {}
    for G in r["gens"]:
        if not budget.allows(f"gen {G} (eager forwards)", 30.0 if device.type == "cuda" else 0.0):
            continue
        lb = LengthBench(net, device, P, G, r["repeats"], r["warmup"], settings, args.seed)
        benches[G] = lb
        length: dict[str, Any] = {"gen_length": G, "prompt_length": P, "span": r["span"]}
        no_cache = [lb.uncached(e) for e in extents_for(G, r["span"])]
        cache_rows = [lb.cached(e) for e in cached_extents_for(G, r["span"])]
        for e in no_cache:
            rate(e, peak)
        for row in cache_rows:
            for entry in row.values():
                rate(entry, peak)
        by_extent = {e["extent"]: e for e in no_cache}
        cached_full = next(row for row in cache_rows if any(v["extent"] == G for v in row.values()))
        length["forwards"] = {
            "full": by_extent[G],
            "truncated": by_extent[r["span"]],
            "cached": cached_full.get("neither"),
            "cached_cases": cached_full,
        }
        length["extents"] = {"no_cache": no_cache, "cache": cache_rows}
        full = by_extent[G]
        print(f"gen {G}: full {full['ms']:.2f} ms ({full.get('tflops_per_s', 0):.3g} TFLOP/s"
              + (f", MFU {full['mfu']:.1%}" if full.get("mfu") else "") + f") | truncated (span end {r['span']}) "
              f"{by_extent[r['span']]['ms']:.2f} ms"
              + (f" | cached V-verify {cached_full['neither']['ms']:.2f} ms" if "neither" in cached_full else ""),
              flush=True)
        length["variants"] = {"eager": {e: by_extent[e]["ms"] for e in (G, r["span"])}}
        result["lengths"].append(length)

    # cheap speed: CUDA graph replay of the uncached forwards, then torch.compile if asked
    for length in result["lengths"]:
        G = length["gen_length"]
        lb = benches[G]
        if device.type != "cuda" or args.no_cuda_graphs:
            break
        if not budget.allows(f"gen {G} CUDA graphs", 10.0):
            break
        graphs = {}
        for e in (G, r["span"]):
            try:
                graphs[e] = lb.cuda_graph(e)["ms"]
            except Exception as exc:  # noqa: BLE001
                budget.notes.append(f"gen {G}: CUDA graph capture of extent {e} failed: {type(exc).__name__}: {exc}")
        if graphs:
            length["variants"]["cuda_graph"] = graphs
    if device.type != "cuda" and not args.no_cuda_graphs:
        budget.notes.append("CUDA graphs: measured on CUDA devices only")
    if args.compile:
        compile_estimate = 60.0 if device.type == "cuda" else 30.0
        anchor_reserve = 0.0 if args.no_anchor else (90.0 if device.type == "cuda" else 10.0)
        compiled_blocks = False
        for length in result["lengths"]:
            G = length["gen_length"]
            lb = benches[G]
            times, seconds = {}, {}
            for e in (G, r["span"]):
                if not budget.allows(f"gen {G} extent {e} torch.compile", compile_estimate + anchor_reserve):
                    continue
                try:
                    if not compiled_blocks:
                        compile_blocks(net)
                        compiled_blocks = True
                    t0 = time.perf_counter()
                    with torch.inference_mode():
                        net(lb.tokens(e), logits_from=P)  # compiles for this shape
                    sync(device)
                    seconds[e] = time.perf_counter() - t0
                    compile_estimate = max(seconds[e] * 1.5, 10.0)
                    times[e] = lb.uncached(e)["ms"]  # the blocks now run compiled
                except Exception as exc:  # noqa: BLE001
                    budget.notes.append(f"gen {G}: torch.compile at extent {e} failed: {type(exc).__name__}: {exc}")
            if times:
                length["variants"]["compile"] = times
                length["variants"]["compile_seconds"] = seconds
        if compiled_blocks:
            result["settings"]["compile_method"] = COMPILE_METHOD
    for length in result["lengths"]:
        v = length["variants"]
        v["speedup"] = {name: {e: v["eager"][e] / ms for e, ms in v[name].items()}
                        for name in ("cuda_graph", "compile") if name in v}
        for name, extents in v["speedup"].items():
            print(f"gen {length['gen_length']}: {name}: " + ", ".join(
                f"extent {e}: {v[name][e]:.2f} ms ({x:.3f}x eager)" for e, x in extents.items()), flush=True)
    del benches, net
    if args.compile:
        try:
            import torch._dynamo

            torch._dynamo.reset()  # drop the compiled blocks' code (and what it holds) before the anchor
        except Exception:  # noqa: BLE001
            pass
    free_memory(device)

    if args.no_anchor:
        budget.notes.append("anchor skipped (--no-anchor)")
    elif budget.allows("the autoregressive anchor", 60.0 if device.type == "cuda" else 0.0):
        result["anchor"] = bench_anchor(device, dtype, r["small"], P, r["anchor_tokens"], r["anchor_repeats"],
                                        bool(args.compile), budget, args.seed)

    profile = r["profile"]
    result["profile"] = {"name": profile["name"], "source": profile["source"],
                         "slowfast_nfe": len(profile["slowfast"]),
                         "slowfast_fractions": profile["slowfast"],
                         "baseline": "gen_length full forwards" if profile["baseline"] is None else profile["baseline"],
                         "slowfast_cache": "the slowfast forwards" if profile["slowfast_cache"] is None
                         else profile["slowfast_cache"],
                         "interpolation": "ms at an extent not measured: piecewise linear in the extent between the "
                                          "measured extents of that forward kind, clamped outside them"}
    anchor_tps = (result["anchor"] or {}).get("tokens_per_s")
    for length in result["lengths"]:
        if len(profile["slowfast"]) > length["gen_length"]:
            budget.notes.append(f"gen {length['gen_length']}: the profile's SlowFast run has more forwards "
                                f"({len(profile['slowfast'])}) than the generation has positions")
        result["projections"].append(projections(length["gen_length"], P, profile, settings, length, anchor_tps,
                                                 budget.notes))
    result["notes"].append("cached forwards time the network with slowfast/cache.py (no host synchronisation "
                           "inside a forward); the engine adds one device-to-host copy per forward for the cache's "
                           "statistics (FeatureCache.summary()), not timed here")
    result["elapsed_seconds"] = budget.elapsed()
    return result


# --- reporting ------------------------------------------------------------------------------------------

def fmt(value: Optional[float], spec: str = ".2f", none: str = "n/a") -> str:
    return none if value is None else format(value, spec)


def markdown(res: dict[str, Any]) -> str:
    s = res["settings"]
    m = res["model"]
    cfg = m["config"]
    cache = s["cache"]
    peak = res["peak_flops"]
    lines = [f"## GPU benchmark: {res['gpu'] or s['device']}", "", f"`{res['command']}`", "",
             f"Machine: {machine_text(res['machine'])}.", "",
             f"Model: {m['name']} ({m['config_source']}): d_model {cfg['d_model']}, {cfg['n_layers']} layers, "
             f"{cfg['n_heads']} heads ({cfg['n_kv_heads'] or cfg['n_heads']} KV), MLP {cfg['mlp_hidden_size']}, vocab "
             f"{cfg['vocab_size']}, RoPE theta {cfg['rope_theta']:g}; {count_text(m.get('parameters', 0))} "
             f"parameters in {s['dtype']} on {s['device']}. Prompt {s['prompt_length']} tokens; the truncated "
             f"fast-stage forward feeds the prompt and the first {s['span']} generated positions (the span end); "
             f"the cache runs K_p {cache['kp']}, K_r {cache['kr']}, rho {cache['rho']} in schedule order. "
             f"{s['timer']}; {s['warmup']} warm-up forwards, then the median of {s['repeats']}.", "",
             f"FLOPs: {res['flops_method']}. Peak: {peak['source']}"
             + (f" = {peak['value'] / 1e12:.1f} TFLOP/s." if peak["value"] else "."), ""]
    for length in res["lengths"]:
        G = length["gen_length"]
        f = length["forwards"]
        full_ms = f["full"]["ms"]
        lines += [f"### Per-forward times, gen {G} after {length['prompt_length']} prompt tokens", "",
                  "| forward | tokens fed | ms | TFLOP/s | MFU | x full |", "|---|---|---|---|---|---|"]
        rows = [("full", f["full"]), (f"truncated fast stage (span end {length['span']})", f["truncated"])]
        for case in CASES:
            entry = f["cached_cases"].get(case)
            if entry:
                rows.append((f"cached: {entry['case']} ({entry['samples']} timed"
                             + (f", {entry['rows_recomputed']:.3f} of rows recomputed" if entry.get("rows_recomputed")
                                is not None else "") + ")", entry))
        for name, e in rows:
            lines.append(f"| {name} | {e['tokens_fed']} | {e['ms']:.2f} | {fmt(e.get('tflops_per_s'), '.3g')} | "
                         f"{fmt(e.get('mfu'), '.1%')} | {e['ms'] / full_ms:.3f} |")
        nc = ", ".join(f"{e['extent']}: {e['ms']:.2f}" for e in length["extents"]["no_cache"])
        lines += ["", f"Uncached ms by generated positions fed: {nc}."]
        for row in length["extents"]["cache"]:
            ext = next(iter(row.values()))["extent"]
            lines.append(f"Cached ms at {ext} positions fed: "
                         + ", ".join(f"{CASE_NAMES[c]} {row[c]['ms']:.2f}" for c in CASES if c in row) + ".")
        v = length["variants"]
        if v.get("speedup"):
            lines += ["", "| uncached forward | eager ms | " + " | ".join(f"{n} ms (x eager)" for n in v["speedup"])
                      + " |", "|---|---|" + "---|" * len(v["speedup"])]
            for e in sorted(v["eager"], reverse=True):
                cells = [f"{v[n][e]:.2f} ({v['speedup'][n][e]:.3f}x)" if e in v[n] else "skipped" for n in v["speedup"]]
                lines.append(f"| {'full' if e == G else 'truncated'} ({length['prompt_length'] + e} tokens) | "
                             f"{v['eager'][e]:.2f} | " + " | ".join(cells) + " |")
            if v.get("compile_seconds"):
                lines.append("")
                lines.append(f"{s.get('compile_method', 'torch.compile')}. First call (compilation): " + ", ".join(
                    f"{e} positions {sec:.1f} s" for e, sec in v["compile_seconds"].items()) + ".")
        lines.append("")
    a = res["anchor"]
    if a:
        lines += ["### Autoregressive anchor", "",
                  f"{a['model']} ({a['config_source']}): hidden {a['config']['hidden_size']}, "
                  f"{a['config']['num_hidden_layers']} layers, {a['config']['num_attention_heads']} heads "
                  f"({a['config']['num_key_value_heads']} KV), intermediate {a['config']['intermediate_size']}, vocab "
                  f"{a['config']['vocab_size']}, RoPE theta {fmt(a['rope_theta'], 'g')}; {count_text(a['parameters'])} "
                  f"parameters, random weights, transformers {a['transformers']} ({a['attention']} attention). "
                  f"`generate`, greedy, {a['new_tokens']} new tokens (min = max) after {a['prompt_length']} prompt "
                  f"tokens; wall time with a synchronisation before and after, median after a warm-up.", "",
                  "| variant | s per generation | tok/s (prefill included) | prefill ms | decode tok/s |",
                  "|---|---|---|---|---|"]
        for v in a["variants"]:
            lines.append(f"| {v['name']} | {v['seconds']:.3f} | {v['tokens_per_s']:.1f} | {v['prefill_ms']:.1f} | "
                         f"{fmt(v['decode_tokens_per_s'], '.1f')} |")
        lines.append("")
    p = res["profile"]
    source = p["source"].rstrip()
    source += "" if source.endswith((".", "!", "?")) else "."  # a trace's or a file's source has no full stop
    lines += ["### Projection from measured per-forward times (not a measured generation)", "",
              f"Profile: {p['name']}. {source} {p['interpolation'].capitalize()}. Tokens/s = gen_length / "
              "(sum over the profile's forwards of the measured ms of that forward's kind and length); "
              + (f"x anchor: against the anchor's eager tok/s above ({a['new_tokens']} new tokens at every gen "
                 f"length)." if a and a.get("tokens_per_s") else "x anchor: n/a (no anchor in this run)."), "",
              "| gen | config | NFE | tokens fed | projected s | projected tok/s | x baseline | x anchor |",
              "|---|---|---|---|---|---|---|---|"]
    for proj in res["projections"]:
        for c in proj["configs"]:
            lines.append(f"| {proj['gen_length']} | {c['config']} | {c['nfe']} | {c['tokens_fed']} | "
                         f"{c['seconds']:.3f} | {fmt(c['tokens_per_s'], '.1f')} | {fmt(c['x_baseline'], '.2f')} | "
                         f"{fmt(c['x_anchor'], '.2f')} |")
    if res["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in res["notes"]]
    lines += ["", f"Whole run: {res['elapsed_seconds']:.0f} s in one process."]
    return "\n".join(lines) + "\n"


# --- command line -----------------------------------------------------------------------------------------

OPTIONS: list[tuple[str, str]] = []  # (flag, dest) in order, for the reproducing command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m slowfast bench gpu`` (and ``python -m slowfast.gpu_bench``)."""

    def add(flag: str, **kw) -> None:
        action = p.add_argument(flag, **kw)
        if (flag, action.dest) not in OPTIONS:
            OPTIONS.append((flag, action.dest))

    add("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if there is one)")
    add("--dtype", default="auto", help="auto (bf16 on CUDA, float32 on a CPU), bfloat16, float16, float32")
    add("--gen-lengths", default=None, help="comma-separated generation lengths (default 256,1024; --small 128,256)")
    add("--prompt-length", type=int, default=None, help="prompt tokens (default 900; --small 16)")
    add("--span", type=int, default=None,
        help="generated positions the truncated fast-stage forward feeds, its span end (default 32; --small 16)")
    add("--kp", type=int, default=100, help="dLLM-Cache prompt refresh interval K_p (default 100)")
    add("--kr", type=int, default=5, help="dLLM-Cache response refresh interval K_r (default 5)")
    add("--rho", type=float, default=0.25, help="dLLM-Cache V-verify ratio (default 0.25)")
    add("--repeats", type=int, default=None, help="timed repeats per forward kind, median reported (default 10)")
    add("--warmup", type=int, default=None, help="untimed warm-up forwards per shape (default 2)")
    add("--anchor-tokens", type=int, default=None, help="new tokens the anchor generates (default 256)")
    add("--anchor-repeats", type=int, default=None, help="timed anchor generations (default 3)")
    add("--no-anchor", action="store_true", help="skip the autoregressive anchor")
    add("--compile", action="store_true",
        help="also torch.compile the uncached forward and the anchor (static cache), each against eager")
    add("--no-cuda-graphs", action="store_true", help="skip the CUDA graph replay of the uncached forward")
    add("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, TFLOP/s (default: the table)")
    add("--profile", default=None, metavar="FILE.json",
        help="NFE/tokens-fed profile: a trace file (python -m slowfast generate --trace) or a JSON object "
             "(see load_profile); default: the paper's GSM8K setting with an assumed SlowFast cycle shape")
    add("--small", action="store_true", help="a shrunken shape for CPUs and tests (d_model 64, 2 layers, vocab 512)")
    add("--seed", type=int, default=0)
    add("--out", default=None, metavar="FILE.json", help="write the results as JSON ({gpu} in the name: the GPU's)")
    add("--md", default=None, metavar="FILE.md", help="write the report as Markdown ({gpu} in the name: the GPU's)")
    add("--max-minutes", type=float, default=8.0, help="hard time budget; parts that would not fit are skipped")
    p.set_defaults(func=main)


def command_line(args: argparse.Namespace, prefix: str = "python -m slowfast bench gpu") -> str:
    import shlex

    defaults = argparse.ArgumentParser(add_help=False)
    add_arguments(defaults)
    base = defaults.parse_args([])
    parts = [prefix]
    for flag, dest in OPTIONS:
        value = getattr(args, dest, None)
        if value == getattr(base, dest, None):
            continue
        parts += [flag] if isinstance(value, bool) else [flag, shlex.quote(str(value))]
    return " ".join(parts)


def main(args: Optional[argparse.Namespace | Sequence[str]] = None) -> int:
    """Run the benchmark; ``args``: parsed options (from ``add_arguments``) or an argv list."""
    if args is None or not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="python -m slowfast.gpu_bench", description=__doc__.split("\n\n")[0],
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(parser)
        args = parser.parse_args(list(sys.argv[1:] if args is None else args))
    try:
        res = run_benchmark(args, command_line(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = markdown(res)
    print()
    print(report)
    out, md = resolve_paths(args, res.get("gpu"))
    if out:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1, default=str)
            f.write("\n")
        print(f"JSON written to {out}")
    if md:
        with open(md, "w", encoding="utf-8") as f:
            f.write(report)
        print(f"Markdown written to {md}")
    return 0


def resolve_paths(args: argparse.Namespace, gpu: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    fill = lambda v: v.replace("{gpu}", slug(gpu or "cpu")) if v else None  # noqa: E731
    return fill(args.out), fill(args.md)


if __name__ == "__main__":
    sys.exit(main())
