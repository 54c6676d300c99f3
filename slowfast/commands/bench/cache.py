"""``bench cache``: the cost of one cached forward against a full forward of the same model on the
same canvas, per refresh case, next to the share of rows it recomputes."""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ...cache import CacheSettings, FeatureCache
from ...models import loading
from ...models.transformer import ModelConfig, Transformer
from ..common import at_least, device_flag, sync

SHAPES: dict[str, dict[str, Any]] = {
    # LLaDA-8B (algorithms.md section 5); --layers shrinks the depth to fit a small machine
    "llada-8b": dict(d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288,
                     vocab_size=126464, embedding_size=126464, max_sequence_length=4096, rope_theta=500000.0),
}


def check_shape(shape: str, layers: Optional[int], device: torch.device, dtype: torch.dtype) -> ModelConfig:
    """The config of ``--shape`` at ``--layers``, refused before anything is built when the flags
    are out of range or the weights would not fit this machine's memory (the estimate of
    ``models.loading.check_memory``, which takes a model's name: weights + 20%)."""
    if shape not in SHAPES:
        raise ValueError(f"--shape: {shape!r} is not allowed; allowed: {', '.join(SHAPES)}")
    depth = SHAPES[shape]["n_layers"]
    if layers is not None and not 1 <= layers <= depth:
        raise ValueError(f"--layers: {layers} is not allowed; allowed with --shape {shape}: 1 .. {depth}")

    def needed(n: int) -> int:
        return loading.memory_needed(loading.parameter_count(ModelConfig(**{**SHAPES[shape], "n_layers": n})), dtype)

    cfg = ModelConfig(**{**SHAPES[shape], "n_layers": layers or depth})
    available = loading.memory_available(device)
    if available is not None and needed(cfg.n_layers) > available:
        fit = max((n for n in range(1, depth + 1) if needed(n) <= available), default=0)
        raise ValueError(f"--shape: {shape} ({cfg.n_layers} layers) is not allowed here; it needs about "
                         f"{needed(cfg.n_layers) / 1e9:.1f} GB in {str(dtype).replace('torch.', '')} and "
                         f"{device.type} has {available / 1e9:.1f} GB; allowed: "
                         + (f"--layers 1 .. {fit}" if fit else "a device with more memory")
                         + ("" if device.type == "cuda" else ", or a GPU (--device cuda)"))
    return cfg


def random_model(shape: str, layers: Optional[int], device: torch.device, dtype: torch.dtype) -> Transformer:
    cfg = check_shape(shape, layers, device, dtype)
    torch.manual_seed(0)
    with torch.device(device):
        net = Transformer(cfg).to(dtype)
    return net.eval()


@dataclass
class ForcedCase(FeatureCache):
    """The cache under one refresh case in every forward (``case``: prompt refresh, response
    refresh) instead of its schedule, for ``bench_cache``; the first forward and layer 0 still
    refresh fully, as in ``FeatureCache.plan``."""

    case: tuple[bool, bool] = (True, True)

    def schedule(self) -> tuple[bool, bool]:
        return self.case


def filled_caches(net: Transformer, tokens: torch.Tensor, prompt_len: int, gen_length: int,
                  settings: CacheSettings, cases: list) -> list[Optional[FeatureCache]]:
    """Per case a cache forced to it, filled by a full first forward (None: no cache)."""
    caches: list[Optional[FeatureCache]] = []
    for _, forced in cases:
        cache = None
        if forced is not None:
            cache = ForcedCase(settings, prompt_len, gen_length, net.cfg.n_layers, case=forced)
            cache.begin_forward()
            net(tokens, cache=cache, logits_from=prompt_len)  # fills the cache (a full first forward)
        caches.append(cache)
    return caches


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
    caches = filled_caches(net, tokens, prompt_len, gen_length, settings, cases)

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


def model_of(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> tuple[Transformer, str]:
    """The network the flags ask for (``--shape``: random weights) and its label."""
    if args.layers is not None and not args.shape:
        raise ValueError(f"--layers: {args.layers} is not allowed without --shape; allowed: --shape "
                         f"{{{', '.join(SHAPES)}}} --layers N (a random-weight model of N layers)")
    if args.shape:
        net, label = random_model(args.shape, args.layers, device, dtype), f"random {args.shape}"
        if args.layers:
            label += f" ({args.layers} layers)"
        return net, label
    return loading.load_model(args.model, device=device, dtype=args.dtype).net, args.model


def cmd_cache(args: argparse.Namespace) -> int:
    device = device_flag(args.device)
    dtype = loading.parse_dtype(args.dtype, device)
    settings = CacheSettings(kp=args.kp, kr=args.kr, rho=args.rho)
    for value, flag in ((args.prompt_len, "--prompt-len"), (args.gen_length, "--gen-length"),
                        (args.repeats, "--repeats")):
        at_least(value, flag)
    net, label = model_of(args, device, dtype)
    print(f"model: {label} | {net.num_parameters() / 1e6:.1f}M params | {device} {str(dtype).replace('torch.', '')} | "
          f"prompt {args.prompt_len} + gen {args.gen_length} tokens | kp={settings.kp} kr={settings.kr} "
          f"rho={settings.rho} | median of {args.repeats}")
    results = bench_cache(net, args.prompt_len, args.gen_length, settings, args.repeats)
    print(f"{'case':28s} {'ms':>9s} {'cost / full':>12s} {'layers only':>12s} {'rows recomputed':>16s}")
    for r in results:
        print(f"{r['case']:28s} {r['seconds'] * 1000:9.2f} {r['cost']:12.3f} {r['layer_cost']:12.3f} {r['rows']:16.3f}")
    n = max(settings.kp, settings.kr)
    if net.cfg.n_layers == 1:  # layer 0 always refreshes: no layer reuses anything
        print(f"over a schedule of {n} forwards, the model's only layer (layer 0) refreshes fully in every forward")
        return 0
    share = schedule_share(settings, args.prompt_len, args.gen_length, n)
    print(f"over a schedule of {n} forwards, layers >= 1 recompute {share:.3f} of their rows on average")
    return 0


def add_parser(bs: argparse._SubParsersAction) -> None:
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
