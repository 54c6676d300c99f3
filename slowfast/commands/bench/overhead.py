"""``bench overhead``: the engine against a bare loop replaying its forwards on the same canvases."""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Optional

import torch

from ...cache import CACHE_PRESETS, CacheSettings, FeatureCache
from ...engine import GenerationSettings, Run, confidences
from ...models.loading import load_model
from ..common import ONE_BLOCK, at_least, machine, machine_line, parse_param


@torch.inference_mode()
def bare_loop(model, prompt_ids: list[int], gen_length: int, plan: list[tuple[int, torch.Tensor]],
              cache_settings: Optional[CacheSettings] = None) -> torch.Tensor:
    """The engine's forwards without the engine: the same canvases fed (``plan``: the forward's
    extent and the positions it decodes), the same confidence computation (softmax, argmax),
    the decoded tokens written back; no policy, no host copies, no records. Returns the canvas."""
    P = len(prompt_ids)
    canvas = torch.full((1, P + gen_length), model.mask_id, dtype=torch.long, device=model.device)
    canvas[0, :P] = torch.tensor(prompt_ids, dtype=torch.long, device=model.device)
    cache = FeatureCache(cache_settings, P, gen_length, model.n_layers) if cache_settings else None
    for extent, positions in plan:
        if cache is not None:
            cache.begin_forward()
        logits = model.forward(canvas[:, : P + extent], cache=cache, start=P)
        _, token = confidences(logits[0], 0.0, None)
        canvas[0, P + positions] = token[positions]
    if cache is not None:
        cache.clear()
    return canvas


def bench_overhead(model, prompt_ids: list[int], settings, repeats: int) -> dict[str, Any]:
    """Engine (``Run`` with its StepRecords, then its Trace) against ``bare_loop`` replaying the
    engine's own decisions, interleaved repeat by repeat after one warm-up of each."""

    def engine() -> tuple[float, float, Any]:
        t0 = time.perf_counter()
        run = Run(model, prompt_ids, settings)
        for _ in run:
            pass
        t1 = time.perf_counter()
        trace = run.trace
        return t1 - t0, time.perf_counter() - t0, trace

    _, _, trace = engine()  # warm-up, and the decisions to replay
    plan = [(r.fed_end, torch.tensor(r.decoded, dtype=torch.long, device=model.device)) for r in trace.records]
    cs = settings.cache_settings()
    canvas = bare_loop(model, list(prompt_ids), settings.gen_length, plan, cs)  # warm-up
    same = canvas[0, len(prompt_ids):].tolist() == trace.tokens
    loop_s, with_trace_s, bare_s = [], [], []
    for _ in range(repeats):
        a, b, _ = engine()
        t0 = time.perf_counter()
        bare_loop(model, list(prompt_ids), settings.gen_length, plan, cs)
        bare_s.append(time.perf_counter() - t0)
        loop_s.append(a)
        with_trace_s.append(b)
    med = statistics.median
    steps = len(plan)
    return {
        "steps": steps, "nfe": trace.stats.nfe, "tokens_fed": trace.stats.tokens_fed, "same_canvas": same,
        "engine_s": med(loop_s), "engine_trace_s": med(with_trace_s), "bare_s": med(bare_s),
        "overhead": med([a / b for a, b in zip(loop_s, bare_s)]) - 1.0,
        "overhead_with_trace": med([a / b for a, b in zip(with_trace_s, bare_s)]) - 1.0,
        "ms_per_step": med([(a - b) / steps * 1000 for a, b in zip(loop_s, bare_s)]) if steps else 0.0,
        "repeats": repeats,
    }


def settings_of(args: argparse.Namespace) -> GenerationSettings:
    """The run's settings, every flag checked before a model is loaded."""
    at_least(args.repeats, "--repeats")
    at_least(args.threads, "--threads")
    at_least(args.block_length, "--block-length", unset=ONE_BLOCK)
    params = dict(parse_param(p) for p in args.param)
    cache = dict(CACHE_PRESETS[args.cache_preset]) if args.cache_preset else None
    settings = GenerationSettings(sampler=args.sampler, gen_length=args.gen_length,
                                  block_length=args.block_length or args.gen_length, steps=args.gen_length,
                                  chat=not args.no_chat, params=params, cache=cache)
    settings.policy()
    return settings


def cmd_overhead(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.cache_preset and not model.supports_cache:
        raise ValueError("--cache-preset: dLLM-Cache is not available for this model")
    ids = model.encode_prompt(args.prompt, chat=not args.no_chat)
    r = bench_overhead(model, ids, settings, args.repeats)
    m = machine(model.device, args.threads)
    print(f"model: {args.model} | {args.sampler}{' + cache ' + args.cache_preset if args.cache_preset else ''} | "
          f"prompt {len(ids)} + gen {settings.gen_length} tokens, block {settings.block_length} | "
          f"{r['steps']} forwards per run | median of {r['repeats']} interleaved pairs")
    print(f"machine: {machine_line(m)}")
    print(f"{'':34s} {'seconds':>8s} {'ms/forward':>10s}")
    for name, s in (("engine (Run with its StepRecords)", r["engine_s"]),
                    ("engine + Trace object", r["engine_trace_s"]), ("bare loop (same forwards)", r["bare_s"])):
        print(f"{name:34s} {s:8.3f} {s / r['steps'] * 1000:10.2f}")
    print(f"engine overhead {r['overhead']:+.1%} ({r['ms_per_step']:.2f} ms per forward); with the Trace object "
          f"{r['overhead_with_trace']:+.1%} (median of paired ratios)")
    print(f"same final canvas as the engine: {'yes' if r['same_canvas'] else 'NO'}")
    return 0


def add_parser(bs: argparse._SubParsersAction) -> None:
    o = bs.add_parser("overhead", help="the engine against a bare loop doing the same forwards")
    o.add_argument("--model", default="embedded")
    o.add_argument("--prompt", default="Story: Ivy has three blue keys .")
    o.add_argument("--sampler", default="slowfast")
    o.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    o.add_argument("--cache-preset", default=None, choices=sorted(CACHE_PRESETS))
    o.add_argument("--gen-length", type=int, default=96)
    o.add_argument("--block-length", type=int, default=None)
    o.add_argument("--repeats", type=int, default=10)
    o.add_argument("--no-chat", action="store_true")
    o.add_argument("--threads", type=int, default=1)
    o.add_argument("--device", default=None)
    o.add_argument("--dtype", default="auto")
    o.set_defaults(func=cmd_overhead)
