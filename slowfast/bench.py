"""Benchmarks over the engine: every ratio is measured side by side in one run.

``cache``: the cost of one cached forward against a full forward of the same model on the
same canvas, per refresh case, next to the share of rows it recomputes.
``samplers``: baseline vs SlowFast (the published forward count, and with our
``stop_when_full``) vs SlowFast + cache on the same prompt and seed: NFE, tokens fed,
seconds, speedup by NFE and by time, and whether the texts agree with the baseline's.
``render``: the decoder's wall time alone against while the app's figures re-render.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Optional

import torch

from .cache import CacheSettings, FeatureCache
from .models.transformer import ModelConfig, Transformer

SHAPES: dict[str, dict[str, Any]] = {
    # LLaDA-8B (algorithms.md section 5); --layers shrinks the depth to fit a small machine
    "llada-8b": dict(d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288,
                     vocab_size=126464, embedding_size=126464, max_sequence_length=4096, rope_theta=500000.0),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_model(shape: str, layers: Optional[int], device: torch.device, dtype: torch.dtype) -> Transformer:
    if shape not in SHAPES:
        raise ValueError(f"shape: {shape!r} is not allowed; allowed: {', '.join(SHAPES)}")
    cfg = ModelConfig(**{**SHAPES[shape], **({"n_layers": layers} if layers else {})})
    torch.manual_seed(0)
    with torch.device(device):
        net = Transformer(cfg).to(dtype)
    return net.eval()


@torch.inference_mode()
def bench_cache(net: Transformer, prompt_len: int, gen_length: int, settings: CacheSettings,
                repeats: int) -> list[dict[str, Any]]:
    """Time a full forward and each cache case on one canvas, interleaved round by round so
    that load on the machine hits all of them alike. ``cost`` is the whole forward (logits
    for the generated rows, as the engine asks); ``layer_cost`` leaves the output head out,
    since the cache does not touch it. ``rows`` is the share of rows recomputed over all layers
    (layer 0 always refreshes unless ``refresh_first_layer`` is off)."""
    device = next(net.parameters()).device
    T = prompt_len + gen_length
    tokens = torch.randint(0, net.cfg.vocab_size, (1, T), device=device)
    cases = [("full forward (no cache)", None), ("prompt + response refresh", (True, True)),
             ("response refresh", (False, True)), ("prompt refresh", (True, False)),
             (f"V-verify (rho={settings.rho})", (False, False))]
    caches: list[Optional[FeatureCache]] = []
    for _, forced in cases:
        cache = None
        if forced is not None:
            cache = FeatureCache(settings, prompt_len, gen_length, net.cfg.n_layers)
            cache.begin_forward()
            net(tokens, cache=cache, logits_from=prompt_len)  # fills the cache
            cache.forced = forced
        caches.append(cache)

    def call(cache: Optional[FeatureCache], logits_from: int) -> float:
        if cache is not None:
            cache.begin_forward()
        sync(device)
        t0 = time.perf_counter()
        net(tokens, cache=cache, logits_from=logits_from)
        sync(device)
        return time.perf_counter() - t0

    times = {key: [[] for _ in cases] for key in ("whole", "layers")}
    for round_ in range(repeats + 1):  # round 0 warms up
        for i, cache in enumerate(caches):
            whole, layers = call(cache, prompt_len), call(cache, T)
            if round_:
                times["whole"][i].append(whole)
                times["layers"][i].append(layers)
    med = {k: [statistics.median(v) for v in lists] for k, lists in times.items()}
    results = []
    for i, (name, forced) in enumerate(cases):
        stats = caches[i].last_stats if caches[i] is not None else []
        rows = sum(s.prompt_recomputed + s.response_recomputed for s in stats) / (T * len(stats)) if stats else 1.0
        results.append({"case": name, "seconds": med["whole"][i], "cost": med["whole"][i] / med["whole"][0],
                        "layer_cost": med["layers"][i] / med["layers"][0], "rows": rows})
    for cache in caches:
        if cache is not None:
            cache.clear()
    return results


def schedule_share(settings: CacheSettings, prompt_len: int, gen_length: int, forwards: int) -> float:
    """Average share of rows recomputed per layer >= 1 over ``forwards`` forwards."""
    total = 0.0
    for f in range(1, forwards + 1):
        p, r = (True, True) if f == 1 else settings.refresh(f)
        total += (prompt_len if p else 0) + (gen_length if r else int(gen_length * settings.rho) if not p else 0)
    return total / (forwards * (prompt_len + gen_length))


def cmd_cache(args: argparse.Namespace) -> int:
    from .models.loading import load_model, parse_dtype

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = parse_dtype(args.dtype, device)
    settings = CacheSettings(kp=args.kp, kr=args.kr, rho=args.rho)
    if args.shape:
        net, label = random_model(args.shape, args.layers, device, dtype), f"random {args.shape}"
        if args.layers:
            label += f" ({args.layers} layers)"
    else:
        net, label = load_model(args.model, device=device, dtype=args.dtype).net, args.model
    print(f"model: {label} | {net.num_parameters() / 1e6:.1f}M params | {device} {str(dtype).replace('torch.', '')} | "
          f"prompt {args.prompt_len} + gen {args.gen_length} tokens | kp={settings.kp} kr={settings.kr} "
          f"rho={settings.rho} | median of {args.repeats}")
    results = bench_cache(net, args.prompt_len, args.gen_length, settings, args.repeats)
    print(f"{'case':28s} {'ms':>9s} {'cost / full':>12s} {'layers only':>12s} {'rows recomputed':>16s}")
    for r in results:
        print(f"{r['case']:28s} {r['seconds'] * 1000:9.2f} {r['cost']:12.3f} {r['layer_cost']:12.3f} {r['rows']:16.3f}")
    n = max(settings.kp, settings.kr)
    share = schedule_share(settings, args.prompt_len, args.gen_length, n)
    print(f"over a schedule of {n} forwards, layers >= 1 recompute {share:.3f} of their rows on average")
    return 0


def cmd_samplers(args: argparse.Namespace) -> int:
    from .engine import GenerationSettings, generate
    from .models.loading import load_model

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    common = dict(gen_length=args.gen_length, block_length=args.block_length, seed=args.seed, chat=not args.no_chat)
    configs = [
        ("baseline", GenerationSettings(sampler="baseline", steps=args.gen_length, **common)),
        ("slowfast", GenerationSettings(sampler="slowfast", **common)),
        ("slowfast, stop when full", GenerationSettings(sampler="slowfast", params={"stop_when_full": True},
                                                        **common)),
        ("slowfast + cache", GenerationSettings(sampler="slowfast", cache={"kp": args.kp, "kr": args.kr,
                                                                            "rho": args.rho}, **common)),
    ]
    generate(model, args.prompt, configs[0][1])  # warm-up
    print(f"model: {args.model} | prompt: {args.prompt!r} | gen {args.gen_length}, block {args.block_length}")
    print(f"{'config':26s} {'NFE':>5s} {'tokens fed':>11s} {'seconds':>8s} {'tok/s':>8s} {'x by NFE':>9s} "
          f"{'x by time':>9s} same text as baseline")
    base = None
    for name, settings in configs:
        t = generate(model, args.prompt, settings)
        s = t.summary
        base = base or t
        speed = base.summary["seconds"] / s["seconds"] if s["seconds"] else float("nan")
        print(f"{name:26s} {s['nfe']:5d} {s['tokens_fed']:11d} {s['seconds']:8.2f} {s['tokens_per_second']:8.1f} "
              f"{base.summary['nfe'] / s['nfe']:8.2f}x {speed:8.2f}x {'yes' if t.text == base.text else 'no'}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    """Decoder wall time alone vs while the app's figures re-render as the app paces them."""
    import visuals

    from .engine import GenerationSettings, generate
    from .models.loading import load_model
    from .session import BackgroundRun, stream_renders

    def draw(trace):  # what the app draws on each refresh of a live run: canvas and visible plot
        return [visuals.canvas_html(trace), visuals.certainty_heatmap(trace)]

    model = load_model(args.model, device=args.device)
    settings = GenerationSettings(sampler=args.sampler, gen_length=args.gen_length, block_length=args.block_length,
                                  steps=args.gen_length, chat=not args.no_chat)
    generate(model, args.prompt, settings)  # warm-up
    alone, rendered, renders = [], [], 0
    for _ in range(args.repeats):  # interleaved, so that load on the machine hits both alike
        alone.append(generate(model, args.prompt, settings).summary["seconds"])
        job = BackgroundRun(model, args.prompt, settings).start()
        for trace, _, _ in stream_renders(job, draw, args.interval):
            renders += 1
        rendered.append(trace.summary["seconds"])
    a, r = statistics.median(alone), statistics.median(rendered)
    print(f"model: {args.model} | {args.sampler} | gen {args.gen_length} | every {args.interval} s | "
          f"median of {args.repeats}")
    print(f"decoder alone {a:.3f} s | while rendering {r:.3f} s ({renders / args.repeats:.1f} renders per run) | "
          f"slowdown {r / a - 1:+.1%}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="benchmarks: cache forward cost, sampler speedups")
    bs = b.add_subparsers(dest="bench", required=True)
    c = bs.add_parser("cache", help="cost of cached forwards against a full forward")
    c.add_argument("--model", default="embedded")
    c.add_argument("--shape", default=None, help=f"a random-weight model instead: {', '.join(SHAPES)}")
    c.add_argument("--layers", type=int, default=None, help="with --shape: use this many layers")
    c.add_argument("--prompt-len", type=int, default=128)
    c.add_argument("--gen-length", type=int, default=256)
    c.add_argument("--kp", "--prompt-interval-steps", dest="kp", type=int, default=100)
    c.add_argument("--kr", "--gen-interval-steps", dest="kr", type=int, default=5)
    c.add_argument("--rho", "--transfer-ratio", dest="rho", type=float, default=0.25)
    c.add_argument("--repeats", type=int, default=5)
    c.add_argument("--device", default=None)
    c.add_argument("--dtype", default="auto")
    c.set_defaults(func=cmd_cache)
    s = bs.add_parser("samplers", help="baseline vs SlowFast vs SlowFast + cache on one prompt")
    s.add_argument("--model", default="embedded")
    s.add_argument("--prompt", required=True)
    s.add_argument("--gen-length", type=int, default=128)
    s.add_argument("--block-length", type=int, default=128)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-chat", action="store_true")
    s.add_argument("--kp", type=int, default=100)
    s.add_argument("--kr", type=int, default=5)
    s.add_argument("--rho", type=float, default=0.25)
    s.add_argument("--device", default=None)
    s.add_argument("--dtype", default="auto")
    s.set_defaults(func=cmd_samplers)
    r = bs.add_parser("render", help="decoder time alone vs while the app's figures re-render")
    r.add_argument("--model", default="embedded")
    r.add_argument("--prompt", default="Story: Mia has three gold pens .")
    r.add_argument("--sampler", default="slowfast")
    r.add_argument("--gen-length", type=int, default=128)
    r.add_argument("--block-length", type=int, default=128)
    r.add_argument("--interval", type=float, default=0.3, help="seconds between re-renders (the app uses 0.3)")
    r.add_argument("--repeats", type=int, default=5)
    r.add_argument("--no-chat", action="store_true")
    r.add_argument("--device", default=None)
    r.set_defaults(func=cmd_render)
