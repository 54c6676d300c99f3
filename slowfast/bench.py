"""Benchmarks over the engine: every ratio is measured side by side in one run.

``cache``: the cost of one cached forward against a full forward of the same model on the
same canvas, per refresh case, next to the share of rows it recomputes.
``samplers``: baseline vs SlowFast (the published forward count, and with our
``stop_when_full``) vs SlowFast + cache on the same prompt and seed: NFE, tokens fed,
seconds, speedup by NFE and by time, and whether the texts agree with the baseline's.
``render``: the decoder's wall time alone against while the app streams its steps, and what each step costs.
``tasks``: baseline, SlowFast and threshold configurations over a task's held-out prompts (or
a JSONL file): accuracy, NFE, tokens fed, time and speedups against one token per forward;
runs under ``torchrun`` (``slowfast/distributed.py``).
``overhead``: the engine against a bare loop replaying its forwards on the same canvases.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .cache import CacheSettings, FeatureCache
from .models.transformer import ModelConfig, Transformer
from .trace import tokens_per_second

SHAPES: dict[str, dict[str, Any]] = {
    # LLaDA-8B (algorithms.md section 5); --layers shrinks the depth to fit a small machine
    "llada-8b": dict(d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288,
                     vocab_size=126464, embedding_size=126464, max_sequence_length=4096, rope_theta=500000.0),
}


ONE_BLOCK = " (leave it out for one block: the generation length)"  # what a --block-length left out means


def at_least(value: Optional[int], flag: str, low: int = 1, unset: str = "") -> None:
    """Refuse a count below ``low`` (``None``, a flag left out, passes); ``unset`` says what leaving it out means."""
    if value is not None and value < low:
        raise ValueError(f"{flag}: {value} is not allowed; it must be >= {low}{unset}")


def device_flag(value: Optional[str]) -> torch.device:
    """``--device`` (default: CUDA when present), refused in one line when bad or absent here."""
    from .models.loading import parse_device

    try:
        return parse_device(value)
    except ValueError as exc:  # its message starts "device: "
        raise ValueError(f"--{exc}") from None


def check_shape(shape: str, layers: Optional[int], device: torch.device, dtype: torch.dtype) -> ModelConfig:
    """The config of ``--shape`` at ``--layers``, refused before anything is built when the flags
    are out of range or the weights would not fit this machine's memory (the estimate of
    ``models.loading.check_memory``, which takes a model's name: weights + 20%)."""
    from .models.loading import memory_available, memory_needed, parameter_count

    if shape not in SHAPES:
        raise ValueError(f"--shape: {shape!r} is not allowed; allowed: {', '.join(SHAPES)}")
    depth = SHAPES[shape]["n_layers"]
    if layers is not None and not 1 <= layers <= depth:
        raise ValueError(f"--layers: {layers} is not allowed; allowed with --shape {shape}: 1 .. {depth}")

    def needed(n: int) -> int:
        return memory_needed(parameter_count(ModelConfig(**{**SHAPES[shape], "n_layers": n})), dtype)

    cfg = ModelConfig(**{**SHAPES[shape], "n_layers": layers or depth})
    available = memory_available(device)
    if available is not None and needed(cfg.n_layers) > available:
        fit = max((n for n in range(1, depth + 1) if needed(n) <= available), default=0)
        raise ValueError(f"--shape: {shape} ({cfg.n_layers} layers) is not allowed here; it needs about "
                         f"{needed(cfg.n_layers) / 1e9:.1f} GB in {str(dtype).replace('torch.', '')} and "
                         f"{device.type} has {available / 1e9:.1f} GB; allowed: "
                         + (f"--layers 1 .. {fit}" if fit else "a device with more memory")
                         + ("" if device.type == "cuda" else ", or a GPU (--device cuda)"))
    return cfg


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
            cache = ForcedCase(settings, prompt_len, gen_length, net.cfg.n_layers, case=forced)
            cache.begin_forward()
            net(tokens, cache=cache, logits_from=prompt_len)  # fills the cache (a full first forward)
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

    device = device_flag(args.device)
    dtype = parse_dtype(args.dtype, device)
    settings = CacheSettings(kp=args.kp, kr=args.kr, rho=args.rho)
    for value, flag in ((args.prompt_len, "--prompt-len"), (args.gen_length, "--gen-length"),
                        (args.repeats, "--repeats")):
        at_least(value, flag)
    if args.layers is not None and not args.shape:
        raise ValueError(f"--layers: {args.layers} is not allowed without --shape; allowed: --shape "
                         f"{{{', '.join(SHAPES)}}} --layers N (a random-weight model of N layers)")
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
    if net.cfg.n_layers == 1:  # layer 0 always refreshes: no layer reuses anything
        print(f"over a schedule of {n} forwards, the model's only layer (layer 0) refreshes fully in every forward")
        return 0
    share = schedule_share(settings, args.prompt_len, args.gen_length, n)
    print(f"over a schedule of {n} forwards, layers >= 1 recompute {share:.3f} of their rows on average")
    return 0


def cmd_samplers(args: argparse.Namespace) -> int:
    from .engine import GenerationSettings, generate
    from .models.loading import load_model

    at_least(args.block_length, "--block-length", unset=ONE_BLOCK)
    block = args.block_length or args.gen_length
    common = dict(gen_length=args.gen_length, block_length=block, seed=args.seed, chat=not args.no_chat)
    configs = [
        ("baseline", GenerationSettings(sampler="baseline", steps=args.gen_length, **common)),
        ("slowfast", GenerationSettings(sampler="slowfast", **common)),
        ("slowfast, stop when full", GenerationSettings(sampler="slowfast", params={"stop_when_full": True},
                                                        **common)),
        ("slowfast + cache", GenerationSettings(sampler="slowfast", cache={"kp": args.kp, "kr": args.kr,
                                                                            "rho": args.rho}, **common)),
    ]
    for _, settings in configs:  # every setting checked before a model is loaded
        settings.policy()
        settings.cache_settings()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    generate(model, args.prompt, configs[0][1])  # warm-up
    print(f"model: {args.model} | prompt: {args.prompt!r} | gen {args.gen_length}, block {block}")
    print(f"{'config':26s} {'NFE':>5s} {'tokens fed':>11s} {'seconds':>8s} {'tok/s':>8s} {'x by NFE':>9s} "
          f"{'x by time':>9s} same text as baseline")
    base = None
    for name, settings in configs:
        t = generate(model, args.prompt, settings)
        s = t.stats
        base = base or t
        x = s.speedups(base.stats)
        print(f"{name:26s} {s.nfe:5d} {s.tokens_fed:11d} {s.seconds:8.2f} {s.tokens_per_second:8.1f} "
              f"{x['nfe']:8.2f}x {x['time']:8.2f}x {'yes' if t.text == base.text else 'no'}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    """Decoder wall time alone vs while the app streams each step to the browser's player, with
    what streaming costs: the server's time per step and the size of each step's delta."""
    import visuals.player as player

    from .engine import GenerationSettings, generate
    from .models.loading import load_model
    from .session import BackgroundRun, stream_batches

    at_least(args.block_length, "--block-length", unset=ONE_BLOCK)
    at_least(args.repeats, "--repeats")
    if not 0.0 <= args.interval < math.inf:
        raise ValueError(f"--interval: {args.interval:g} is not allowed; allowed: seconds >= 0")
    if not 0.0 < args.budget <= 1.0:
        raise ValueError(f"--budget: {args.budget:g} is not allowed; allowed: a share in (0, 1] (1: no limit)")
    settings = GenerationSettings(sampler=args.sampler, gen_length=args.gen_length,
                                  block_length=args.block_length or args.gen_length, steps=args.gen_length,
                                  chat=not args.no_chat)
    settings.policy()  # bad settings fail here, before a model is loaded
    model = load_model(args.model, device=args.device)
    generate(model, args.prompt, settings)  # warm-up
    alone, streamed, steps, sizes, cpu = [], [], 0, [], 0.0
    for _ in range(args.repeats):  # interleaved, so that load on the machine hits both alike
        alone.append(generate(model, args.prompt, settings).stats.seconds)
        job = BackgroundRun(model, args.prompt, settings).start()
        stream = player.PlayerStream("bench")
        for trace, done in stream_batches(job, args.interval, budget=args.budget):
            t0 = time.thread_time()  # this thread's CPU: what the server spends on the player
            message = stream.end(trace) if done else stream.update(trace)
            if message is not None:
                for d in message.get("steps", []):
                    sizes.append(len(player.dumps(d).encode()))
                player.dumps(message)
            cpu += time.thread_time() - t0
        steps += len(trace.records)
        streamed.append(trace.stats.seconds)
    a, r = statistics.median(alone), statistics.median(streamed)
    paired = statistics.median(x / y for x, y in zip(streamed, alone))  # each run against the one just before it
    print(f"model: {args.model} | {args.sampler} | gen {args.gen_length} | sent at most every {args.interval} s | "
          f"streaming budget {args.budget:g} while decoding | {args.repeats} interleaved pairs")
    print(f"decoder alone {a:.3f} s | while streaming {r:.3f} s (medians) | slowdown {paired - 1:+.1%} "
          "(median of paired ratios)")
    print(f"per step: server CPU {1000 * cpu / max(steps, 1):.2f} ms (deltas, explanations, JSON) | delta "
          f"{statistics.mean(sizes) / 1024:.2f} KiB mean, {max(sizes) / 1024:.2f} KiB largest "
          f"({sum(s > 2048 for s in sizes)} of {len(sizes)} over 2 KiB; the first carries every position)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="benchmarks: cache forward cost, sampler speedups, task sets, engine overhead")
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
    s.add_argument("--block-length", type=int, default=None, help="default: the generation length (one block)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-chat", action="store_true")
    s.add_argument("--kp", type=int, default=100)
    s.add_argument("--kr", type=int, default=5)
    s.add_argument("--rho", type=float, default=0.25)
    s.add_argument("--device", default=None)
    s.add_argument("--dtype", default="auto")
    s.set_defaults(func=cmd_samplers)
    r = bs.add_parser("render", help="decoder time alone vs while the app streams its steps to the browser")
    r.add_argument("--model", default="embedded")
    r.add_argument("--prompt", default="Story: Ivy has three blue keys .")
    r.add_argument("--sampler", default="slowfast")
    r.add_argument("--gen-length", type=int, default=128)
    r.add_argument("--block-length", type=int, default=None, help="default: the generation length (one block)")
    r.add_argument("--interval", type=float, default=0.05, help="seconds between two messages at least (the app uses 0.05)")
    r.add_argument("--budget", type=float, default=0.05,
                   help="share of the time streaming may take while the run decodes (the app uses 0.05); 1: no limit")
    r.add_argument("--repeats", type=int, default=5)
    r.add_argument("--no-chat", action="store_true")
    r.add_argument("--device", default=None)
    r.set_defaults(func=cmd_render)
    add_task_parsers(bs)


# --- machine -----------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(device: Any = "cpu", threads: Optional[int] = None, processes: int = 1) -> dict[str, Any]:
    """What a timing depends on, to print next to it."""
    import datetime
    import os
    import platform

    dev = torch.device(device)
    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "threads": threads if threads is not None else torch.get_num_threads(), "processes": processes,
        "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = round(os.getloadavg()[0], 2)  # other work on the machine at the start
    return info


def machine_line(m: dict[str, Any]) -> str:
    where = m["gpu"] or f"{m['device']}"
    line = (f"{m['cpu']} ({m['cores']} cores) | {where} | {m['threads']} torch thread"
            f"{'s' if m['threads'] != 1 else ''} per process | {m['processes']} process"
            f"{'es' if m['processes'] != 1 else ''} | torch {m['torch']} | {m['date']}")
    if m.get("load_average") is not None:
        line += f" | load average {m['load_average']} at start"
    return line


def progress_bar(total: int, desc: str, enabled: bool = True):
    """tqdm on stderr, shown only on a terminal (and only where ``enabled``, e.g. rank 0)."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not (enabled and sys.stderr.isatty()), leave=False,
                dynamic_ncols=True)


# --- bench tasks: configurations over a task set -------------------------------------------------

BASE = "baseline"  # the one-token-per-forward baseline: every speedup is against it
CONFIG_IDS = ("baseline", "baseline/2", "baseline/4", "baseline/8", "slowfast", "slowfast-early", "slowfast-paper",
              "slowfast+cache", "threshold-0.7", "threshold-0.8", "threshold-0.9", "threshold-0.9+cache")


def task_configs(gen_length: int, block_length: int, *, chat: bool = False, seed: int = 0,
                 thresholds: tuple[float, ...] = (0.7, 0.8, 0.9), cache_preset: str = "slowfast-headline",
                 only: Optional[list[str]] = None, cache: bool = True) -> list[tuple[str, str, Any]]:
    """``(id, label, GenerationSettings)`` for every configuration ``bench tasks`` compares.

    Baseline at one token per forward (steps = gen length; always included, as the reference)
    and at gen/2, gen/4, gen/8 steps (rounded down to a multiple of the blocks, at least one
    per block); SlowFast with the reference defaults, with ``stop_when_full`` (the early exit),
    the paper variant, and with dLLM-Cache at ``cache_preset``; the threshold sampler at each
    threshold, and at the highest with the cache. ``cache=False`` leaves the cached ones out
    (models without our transformer's layers)."""
    from .cache import CACHE_PRESETS
    from .engine import GenerationSettings

    if cache_preset not in CACHE_PRESETS:
        raise ValueError(f"--cache-preset: {cache_preset!r} is not allowed; allowed: "
                         f"{', '.join(sorted(CACHE_PRESETS))}")
    cache_params = dict(CACHE_PRESETS[cache_preset])
    nb = gen_length // block_length if block_length and gen_length % block_length == 0 else 1

    def settings(sampler: str, steps: int = gen_length, **kw) -> Any:
        return GenerationSettings(sampler=sampler, gen_length=gen_length, block_length=block_length, steps=steps,
                                  chat=chat, seed=seed, **kw)

    def steps_for(div: int) -> int:
        return max(nb, (gen_length // div) // nb * nb)

    out: list[tuple[str, str, Any]] = [(BASE, "baseline, 1 token per forward", settings("baseline"))]
    for div in (2, 4, 8):
        out.append((f"baseline/{div}", f"baseline, {steps_for(div)} steps (gen/{div})",
                    settings("baseline", steps_for(div))))
    out += [
        ("slowfast", "SlowFast (reference defaults)", settings("slowfast")),
        ("slowfast-early", "SlowFast + stop_when_full", settings("slowfast", params={"stop_when_full": True})),
        ("slowfast-paper", "SlowFast (paper variant)", settings("slowfast", params={"variant": "paper"})),
        ("slowfast+cache", f"SlowFast + cache ({cache_preset})", settings("slowfast", cache=dict(cache_params))),
    ]
    for th in thresholds:
        out.append((f"threshold-{th:g}", f"threshold {th:g}", settings("threshold", params={"threshold": th})))
    if thresholds:
        th = max(thresholds)
        out.append((f"threshold-{th:g}+cache", f"threshold {th:g} + cache ({cache_preset})",
                    settings("threshold", params={"threshold": th}, cache=dict(cache_params))))
    if only:
        known = [c[0] for c in out]
        unknown = [c for c in only if c not in known]
        if unknown:
            raise ValueError(f"--configs: {', '.join(unknown)} not known; allowed: {', '.join(known)}")
        out = [c for c in out if c[0] == BASE or c[0] in only]
    if not cache:
        out = [c for c in out if c[2].cache is None]
    for _, _, s in out:
        s.policy()  # bad settings fail here, before any decoding
    return out


def bench_task(model, problems, configs: list[tuple[str, str, Any]], dist=None, warmup: bool = True,
               progress: bool = True) -> dict[str, Any]:
    """Every configuration on every prompt of ``problems``: configurations interleaved per prompt
    (their order rotated from prompt to prompt), after one untimed warm-up run of each.

    Under ``torchrun`` each rank decodes its slice of the prompts and the rows are gathered
    on every rank. Returns ``{"task", "count", "gen_length", "block_length", "metric",
    "configs": [summary per configuration], "problems": [row per prompt]}``."""
    from .distributed import Dist
    from .problems import run_problem

    dist = dist or Dist()
    mine = dist.shard(problems.problems)
    if warmup and mine:
        for _, _, s in configs:
            run_problem(model, problems, mine[0], s)
    rows = []
    bar = progress_bar(len(mine) * len(configs), f"{problems.name}", progress and dist.is_main)
    try:
        for p in mine:
            k = p.index % len(configs)
            row: dict[str, Any] = {"index": p.index, "prompt": p.prompt, "answer": p.answer, "runs": {}}
            for cid, _, s in configs[k:] + configs[:k]:
                r = run_problem(model, problems, p, s)
                r.pop("index")
                row["runs"][cid] = r
                bar.update()
            row["runs"] = {cid: row["runs"][cid] for cid, _, _ in configs}  # back in the configurations' order
            rows.append(row)
    finally:
        bar.close()
    rows = dist.gather_rows(rows)
    block = configs[0][2].block_length
    return {"task": problems.name, "source": problems.source, "count": len(rows), "gen_length": problems.gen_length,
            "block_length": block, "metric": problems.metric, "configs": summarize_configs(configs, rows),
            "problems": rows}


def summarize_configs(configs: list[tuple[str, str, Any]], rows: list[dict]) -> list[dict[str, Any]]:
    """Per configuration: accuracy, means of NFE / forwards / tokens fed, total seconds, tokens/s
    (generated positions over seconds), speedups against the one-token-per-forward baseline by
    NFE and by tokens fed (ratios of totals) and by time (median of per-prompt time ratios)."""
    out = []
    n = len(rows)
    for cid, label_, s in configs:
        runs = [row["runs"][cid] for row in rows]
        base = [row["runs"][BASE] for row in rows]
        total = lambda key, rs: sum(r[key] for r in rs)  # noqa: E731
        secs = total("seconds", runs)
        ratios = [b["seconds"] / r["seconds"] for b, r in zip(base, runs) if r["seconds"] > 0]
        out.append({
            "id": cid, "label": label_, "settings": s.to_dict(s.policy()), "n": n,
            "accuracy": total("score", runs) / n if n else 0.0,
            "nfe": total("nfe", runs) / n if n else 0.0,
            "forwards": total("forwards", runs) / n if n else 0.0,
            "tokens_fed": total("tokens_fed", runs) / n if n else 0.0,
            "seconds": secs, "seconds_per_prompt": secs / n if n else 0.0,
            "tokens_per_second": tokens_per_second(s.gen_length * n, secs),
            "speedup_nfe": total("nfe", base) / total("nfe", runs) if n and total("nfe", runs) else 0.0,
            "speedup_tokens_fed": (total("tokens_fed", base) / total("tokens_fed", runs)
                                   if n and total("tokens_fed", runs) else 0.0),
            "speedup_time": statistics.median(ratios) if ratios else 0.0,
            "stalled": sum(bool(r["stalled"]) for r in runs),
        })
    return out


TABLE_COLUMNS = ("config", "acc", "NFE", "forwards", "tokens fed", "s/prompt", "tok/s", "x NFE", "x fed", "x time")


def task_header(result: dict[str, Any]) -> str:
    where = "held-out prompts" if result["source"] == "task" else "prompts from the JSONL file"
    return (f"{result['task']}: {result['count']} {where} | gen {result['gen_length']}, block "
            f"{result['block_length']} | accuracy = {result['metric']}")


def task_table(result: dict[str, Any]) -> str:
    lines = [f"{'config':42s} {'acc':>6s} {'NFE':>7s} {'forwards':>8s} {'tokens fed':>10s} {'s/prompt':>8s} "
             f"{'tok/s':>8s} {'x NFE':>6s} {'x fed':>6s} {'x time':>6s}"]
    for c in result["configs"]:
        stalled = f"  ({c['stalled']} stalled)" if c["stalled"] else ""
        lines.append(f"{c['label'][:42]:42s} {c['accuracy']:6.1%} {c['nfe']:7.1f} {c['forwards']:8.1f} "
                     f"{c['tokens_fed']:10.0f} {c['seconds_per_prompt']:8.3f} {c['tokens_per_second']:8.1f} "
                     f"{c['speedup_nfe']:6.2f} {c['speedup_tokens_fed']:6.2f} {c['speedup_time']:6.2f}{stalled}")
    return "\n".join(lines)


def task_markdown(results: list[dict[str, Any]], m: dict[str, Any], command: str, model_label: str) -> str:
    lines = ["## Samplers over task sets", "",
             f"`{command}`", "",
             f"Model: {model_label}. Machine: {machine_line(m)}.", "",
             "Greedy, one prompt at a time, through the engine. Configurations run interleaved per prompt "
             "after one warm-up run each. Speedups are against the baseline at one token per forward: by NFE and "
             "by tokens fed, ratios of totals (exact); by time, the median of per-prompt paired time ratios "
             "(wall time on this machine)."]
    for r in results:
        lines += ["", f"### {task_header(r)}", "",
                  "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
        for c in r["configs"]:
            stalled = f" ({c['stalled']} stalled)" if c["stalled"] else ""
            lines.append(f"| {c['label']}{stalled} | {c['accuracy']:.1%} | {c['nfe']:.1f} | {c['forwards']:.1f} | "
                         f"{c['tokens_fed']:.0f} | {c['seconds_per_prompt']:.3f} | {c['tokens_per_second']:.1f} | "
                         f"{c['speedup_nfe']:.2f} | {c['speedup_tokens_fed']:.2f} | {c['speedup_time']:.2f} |")
    return "\n".join(lines) + "\n"


def command_line(args: argparse.Namespace, prefix: str) -> str:
    """The command that reproduces ``args`` (flags that differ from their defaults), for a report."""
    import shlex

    parts = [prefix]
    for action in args.parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, None)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreConstAction)):
            parts.append(flag)
        elif isinstance(value, list):
            for v in value:
                parts += [flag, shlex.quote(str(v))]
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def float_list(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{flag}: {text!r} is not allowed; use comma-separated numbers") from None


def cmd_tasks(args: argparse.Namespace) -> int:
    import json
    import sys

    from .cli import check_output_path
    from .distributed import setup
    from .models.loading import load_model
    from .problems import problem_set
    from .tasks import TASKS

    for path, flag in ((args.json, "--json"), (args.md, "--md")):
        if path:
            check_output_path(path, flag)
    at_least(args.threads, "--threads")
    at_least(args.gen_length, "--gen-length", unset=" (leave it out for the task's own)")
    at_least(args.block_length, "--block-length", unset=ONE_BLOCK)
    only = [c.strip() for c in args.configs.split(",") if c.strip()] if args.configs else None
    thresholds = float_list(args.thresholds, "--thresholds")
    if args.task and args.jsonl:
        raise ValueError("--task and --jsonl: give one of them")
    if args.jsonl:
        try:
            sets = [problem_set(count=args.count, jsonl=args.jsonl, gen_length=args.gen_length,
                                chat=not args.no_chat)]
        except UnicodeDecodeError as exc:
            raise ValueError(f"--jsonl: {args.jsonl} is not allowed; it is not UTF-8 text (byte {exc.start}); "
                             "allowed: a UTF-8 file of JSON lines") from None
    else:
        names = [t.strip() for t in (args.task or ",".join(TASKS)).split(",") if t.strip()]
        sets = [problem_set(name, args.count, gen_length=args.gen_length) for name in names]
    plans = [(ps, task_configs(ps.gen_length, args.block_length or ps.gen_length, chat=ps.chat, seed=args.seed,
                               thresholds=thresholds, cache_preset=args.cache_preset, only=only))
             for ps in sets]  # every setting checked before a model is loaded
    torch.set_num_threads(args.threads)
    dist = setup(args.device)
    try:
        device = dist.device(args.device)
        model = load_model(args.model, device=device, dtype=args.dtype)
        m = machine(device, args.threads, dist.world)
        params = sum(p.numel() for p in model.net.parameters())
        label_ = f"{args.model} ({params / 1e6:.1f}M params, {str(model.dtype).replace('torch.', '')})"
        if dist.is_main:
            print(f"model: {label_}")
            print(f"machine: {machine_line(m)}")
        results = []
        for ps, configs in plans:
            if not model.supports_cache:
                configs = [c for c in configs if c[2].cache is None]
            r = bench_task(model, ps, configs, dist)
            results.append(r)
            if dist.is_main:
                print()
                print(task_header(r))
                print(task_table(r))
        if dist.is_main:
            print("\nx NFE, x fed: the baseline's totals over this configuration's; x time: median of per-prompt "
                  "time ratios against the baseline at one token per forward")
            command = command_line(args, "python -m slowfast bench tasks")
            if args.json:
                with open(args.json, "w", encoding="utf-8") as f:
                    json.dump({"command": command.strip(), "model": args.model, "machine": m, "tasks": results}, f,
                              indent=1)
                    f.write("\n")
                print(f"JSON written to {args.json}")
            if args.md:
                with open(args.md, "w", encoding="utf-8") as f:
                    f.write(task_markdown(results, m, command.strip(), label_))
                print(f"Markdown written to {args.md}")
            sys.stdout.flush()
    finally:
        dist.close()
    return 0


# --- bench overhead: the engine against a bare loop doing the same forwards -----------------------


@torch.inference_mode()
def bare_loop(model, prompt_ids: list[int], gen_length: int, plan: list[tuple[int, torch.Tensor]],
              cache_settings: Optional[CacheSettings] = None) -> torch.Tensor:
    """The engine's forwards without the engine: the same canvases fed (``plan``: the forward's
    extent and the positions it decodes), the same confidence computation (softmax, argmax),
    the decoded tokens written back; no policy, no host copies, no records. Returns the canvas."""
    from .engine import confidences

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
    from .engine import Run

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


def cmd_overhead(args: argparse.Namespace) -> int:
    from .cache import CACHE_PRESETS
    from .cli import parse_param
    from .engine import GenerationSettings
    from .models.loading import load_model

    at_least(args.repeats, "--repeats")
    at_least(args.threads, "--threads")
    at_least(args.block_length, "--block-length", unset=ONE_BLOCK)
    params = dict(parse_param(p) for p in args.param)
    cache = dict(CACHE_PRESETS[args.cache_preset]) if args.cache_preset else None
    settings = GenerationSettings(sampler=args.sampler, gen_length=args.gen_length,
                                  block_length=args.block_length or args.gen_length, steps=args.gen_length,
                                  chat=not args.no_chat, params=params, cache=cache)
    settings.policy()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    if cache is not None and not model.supports_cache:
        raise ValueError("--cache-preset: dLLM-Cache is not available for this model")
    ids = model.encode_prompt(args.prompt, chat=not args.no_chat)
    r = bench_overhead(model, ids, settings, args.repeats)
    m = machine(model.device, args.threads)
    print(f"model: {args.model} | {args.sampler}{' + cache ' + args.cache_preset if cache else ''} | "
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


def add_task_parsers(bs: argparse._SubParsersAction) -> None:
    from .cache import CACHE_PRESETS

    t = bs.add_parser("tasks", help="configurations over a task's held-out set: accuracy, NFE, tokens fed, time",
                      description="Baseline (1 token per forward, gen/2, gen/4, gen/8 steps), SlowFast (reference, "
                                  "stop_when_full, paper variant, + cache), threshold (several, + cache) over a "
                                  "task's held-out prompts or a JSONL file. Runs under torchrun too (one slice of "
                                  "the prompts per rank).")
    t.add_argument("--model", default="embedded")
    t.add_argument("--task", default=None, help="comma-separated embedded-model tasks (default: all of them)")
    t.add_argument("--jsonl", default=None, metavar="FILE",
                   help='{"prompt", "answer"} per line, scored by exact match of the text cut at end-of-text')
    t.add_argument("--count", type=int, default=20, help="prompts per task (the first held-out ones)")
    t.add_argument("--gen-length", type=int, default=None, help="default: the task's (JSONL: 96)")
    t.add_argument("--block-length", type=int, default=None, help="default: the generation length (one block)")
    t.add_argument("--configs", default=None, help=f"comma-separated subset of: {', '.join(CONFIG_IDS)} "
                                                   "(the baseline is always run)")
    t.add_argument("--thresholds", default="0.7,0.8,0.9", help="threshold sampler values (the highest also + cache)")
    t.add_argument("--cache-preset", default="slowfast-headline", choices=sorted(CACHE_PRESETS))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-chat", action="store_true", help="JSONL: do not apply the tokenizer's chat template")
    t.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    t.add_argument("--device", default=None)
    t.add_argument("--dtype", default="auto")
    t.add_argument("--json", default=None, metavar="OUT.json")
    t.add_argument("--md", default=None, metavar="OUT.md")
    t.set_defaults(func=cmd_tasks, parser=t)
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
    from . import gpu_bench

    g = bs.add_parser("gpu", help="LLaDA-8B-shaped forwards on one GPU, the Llama-3-8B anchor, a projection "
                                  "(--small: a shrunken shape that runs on a CPU)")
    gpu_bench.add_arguments(g)
