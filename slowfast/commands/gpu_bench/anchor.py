"""``bench gpu``'s autoregressive anchor: transformers' LlamaForCausalLM with Llama-3-8B's shape
(random weights), ``generate`` with its KV cache."""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
import transformers

from ..common import sync
from .shapes import LLAMA3_8B_SOURCE, llama_config, random_llama
from .timing import Budget, free_memory, median


def anchor_facts(config, model, small: bool, P: int, new_tokens: int) -> dict[str, Any]:
    """The anchor's model, shape and run, before anything is timed."""
    theta = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    return {
        "model": "LlamaForCausalLM, Llama-3-8B shape" if not small else "LlamaForCausalLM, small shape",
        "config_source": LLAMA3_8B_SOURCE if not small else "--small",
        "config": {k: getattr(config, k, None) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                         "num_attention_heads", "num_key_value_heads",
                                                         "vocab_size", "max_position_embeddings")},
        "rope_theta": theta, "parameters": sum(p.numel() for p in model.parameters()),
        "transformers": transformers.__version__, "attention": getattr(model.config, "_attn_implementation", None),
        "prompt_length": P, "new_tokens": new_tokens, "variants": [],
    }


def time_variant(run: Callable[..., tuple[float, int]], name: str, kw: dict[str, Any], new_tokens: int,
                 repeats: int) -> dict[str, Any]:
    """One variant of ``generate``: a warm-up (and, compiled, the compilation), then the median
    of ``repeats`` whole calls and of as many prefills (one new token)."""
    t_first, _ = run(new_tokens, **kw)
    run(1, **kw)
    whole, prefill, made = [], [], []
    for _ in range(repeats):
        s, n = run(new_tokens, **kw)
        whole.append(s)
        made.append(n)
        prefill.append(run(1, **kw)[0])
    w, pf = median(whole), median(prefill)
    return {"name": name, "seconds": w, "seconds_all": whole, "first_call_seconds": t_first,
            "new_tokens_made": made, "tokens_per_s": new_tokens / w, "prefill_ms": pf * 1000.0,
            "decode_tokens_per_s": (new_tokens - 1) / (w - pf) if w > pf and new_tokens > 1 else None}


def bench_anchor(device: torch.device, dtype: torch.dtype, small: bool, P: int, new_tokens: int, repeats: int,
                 compile_static: bool, budget: Budget, seed: int) -> dict[str, Any]:
    """transformers' LlamaForCausalLM (random weights) ``generate``: greedy, KV cache, exactly
    ``new_tokens`` new tokens after a P-token prompt. Whole-call wall time (prefill included) and
    the prefill alone (one new token), each the median of ``repeats`` after a warm-up."""
    config = llama_config(small)
    model = random_llama(config, device, dtype, seed)
    gen = torch.Generator(device="cpu").manual_seed(seed + 7)
    ids = torch.randint(2, config.vocab_size, (1, P), generator=gen).to(device)
    mask = torch.ones_like(ids)
    result = anchor_facts(config, model, small, P, new_tokens)

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
            v = time_variant(run, name, kw, new_tokens, repeats)
        except Exception as exc:  # noqa: BLE001 - a variant that fails is reported, the rest stands
            budget.notes.append(f"anchor variant '{name}' failed: {type(exc).__name__}: {exc}")
            continue
        result["variants"].append(v)
        print(f"  anchor {name}: {v['tokens_per_s']:.1f} tok/s ({v['seconds']:.3f} s for {new_tokens} tokens, "
              f"prefill {v['prefill_ms']:.1f} ms)", flush=True)
    model = None  # the anchor's weights go before anything else runs
    free_memory(device)
    best = [v["tokens_per_s"] for v in result["variants"]]
    result["tokens_per_s"] = result["variants"][0]["tokens_per_s"] if result["variants"] else None
    result["best_tokens_per_s"] = max(best) if best else None
    return result
