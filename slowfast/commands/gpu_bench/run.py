"""``bench gpu``'s run: every setting checked, then the forwards of each generation length, the
cheap speed-ups, the anchor and the projection, within the time budget."""
from __future__ import annotations

import argparse
import time
from typing import Any, Optional

import torch

from ...cache import CacheSettings
from ...models.loading import parse_device, parse_dtype
from ..common import check_output_path, machine, machine_line, sync
from .anchor import bench_anchor
from .measure import COMPILE_METHOD, LengthBench, cached_extents_for, compile_blocks, extents_for, rate
from .projection import default_profile, load_profile, projections
from .shapes import FLOPS_METHOD, LLADA_8B_SOURCE, llada_config, random_transformer
from .timing import Budget, count_text, free_memory, int_list, peak_flops, slug



def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Every setting checked and defaulted before anything is built."""
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
        if value is not None:
            path = value.replace("{gpu}", slug(gpu or "cpu"))
            check_output_path(path, flag)
            paths[flag] = path
    profile = load_profile(args.profile) if args.profile else default_profile()
    return dict(small=small, device=device, dtype=dtype, gens=gens, P=P, span=span, repeats=repeats, warmup=warmup,
                anchor_tokens=anchor_tokens, anchor_repeats=anchor_repeats, settings=settings, cfg=cfg, gpu=gpu,
                out=paths.get("--out"), md=paths.get("--md"), profile=profile)


def device_info(device: torch.device) -> dict[str, Any]:
    info = machine(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                     "capability": f"{props.major}.{props.minor}", "sm_count": props.multi_processor_count,
                     "gpu_memory_gib": round(props.total_memory / 2**30, 1)})
    return info


def machine_text(m: dict[str, Any]) -> str:
    line = machine_line(m)
    if m.get("cuda"):
        line += (f" | CUDA {m['cuda']}, compute capability {m['capability']}, {m['sm_count']} SMs, "
                 f"{m['gpu_memory_gib']} GiB")
    return line


def new_result(args: argparse.Namespace, r: dict[str, Any], command: str, budget: Budget) -> dict[str, Any]:
    """The result before anything is measured: the command, machine, settings, model and peak."""
    device, settings, P = r["device"], r["settings"], r["P"]
    peak, peak_source = peak_flops(r["gpu"], args.peak_tflops)
    return {
        "title": "LLaDA-8B-shaped forwards, the autoregressive anchor, and a projection",
        "command": command, "machine": device_info(device), "gpu": r["gpu"],
        "settings": {"device": str(device), "dtype": str(r["dtype"]).replace("torch.", ""), "small": r["small"],
                     "prompt_length": P, "gen_lengths": r["gens"], "span": r["span"], "repeats": r["repeats"],
                     "warmup": r["warmup"], "cache": {"kp": settings.kp, "kr": settings.kr, "rho": settings.rho},
                     "compile": bool(args.compile), "cuda_graphs": device.type == "cuda" and not args.no_cuda_graphs,
                     "max_minutes": args.max_minutes, "seed": args.seed,
                     "timer": "CUDA events, one synchronisation per batch of forwards" if device.type == "cuda"
                     else "time.perf_counter per forward"},
        "model": {"name": "LLaDA-8B-Instruct shape, random weights" if not r["small"] else "small LLaDA shape",
                  "config_source": LLADA_8B_SOURCE if not r["small"] else "--small",
                  "config": r["cfg"].to_dict()},
        "flops_method": FLOPS_METHOD,
        "peak_flops": {"value": peak, "source": peak_source},
        "lengths": [], "anchor": None, "profile": None, "projections": [], "notes": budget.notes,
    }


def build_net(args: argparse.Namespace, r: dict[str, Any], result: dict[str, Any]):
    """Our transformer in the run's shape with random weights, on the device."""
    device = r["device"]
    peak, source = result["peak_flops"]["value"], result["peak_flops"]["source"]
    print(f"machine: {machine_text(result['machine'])}", flush=True)
    print(f"peak: {source}" + (f" = {peak / 1e12:.1f} TFLOP/s" if peak else ""), flush=True)
    t0 = time.perf_counter()
    net = random_transformer(r["cfg"], device, r["dtype"], args.seed)
    sync(device)
    result["model"]["parameters"] = net.num_parameters()
    result["model"]["build_seconds"] = time.perf_counter() - t0
    print(f"model: {result['model']['name']}: {count_text(net.num_parameters())} parameters, "
          f"{result['settings']['dtype']}, built on {device} in {result['model']['build_seconds']:.1f} s", flush=True)
    return net


def measure_length(lb: LengthBench, G: int, r: dict[str, Any], peak: Optional[float]) -> dict[str, Any]:
    """The eager forwards of one generation length: uncached at every extent, cached at a few."""
    span = r["span"]
    length: dict[str, Any] = {"gen_length": G, "prompt_length": r["P"], "span": span}
    no_cache = [lb.uncached(e) for e in extents_for(G, span)]
    cache_rows = [lb.cached(e) for e in cached_extents_for(G, span)]
    for e in no_cache:
        rate(e, peak)
    for row in cache_rows:
        for entry in row.values():
            rate(entry, peak)
    by_extent = {e["extent"]: e for e in no_cache}
    cached_full = next(row for row in cache_rows if any(v["extent"] == G for v in row.values()))
    length["forwards"] = {
        "full": by_extent[G],
        "truncated": by_extent[span],
        "cached": cached_full.get("neither"),
        "cached_cases": cached_full,
    }
    length["extents"] = {"no_cache": no_cache, "cache": cache_rows}
    full = by_extent[G]
    print(f"gen {G}: full {full['ms']:.2f} ms ({full.get('tflops_per_s', 0):.3g} TFLOP/s"
          + (f", MFU {full['mfu']:.1%}" if full.get("mfu") else "") + f") | truncated (span end {span}) "
          f"{by_extent[span]['ms']:.2f} ms"
          + (f" | cached V-verify {cached_full['neither']['ms']:.2f} ms" if "neither" in cached_full else ""),
          flush=True)
    length["variants"] = {"eager": {e: by_extent[e]["ms"] for e in (G, span)}}
    return length


def cuda_graphs(args: argparse.Namespace, r: dict[str, Any], result: dict[str, Any],
                benches: dict[int, LengthBench], budget: Budget) -> None:
    """Cheap speed: the uncached forwards replayed as CUDA graphs (on CUDA devices)."""
    device = r["device"]
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


def compiled(args: argparse.Namespace, r: dict[str, Any], result: dict[str, Any], net,
             benches: dict[int, LengthBench], budget: Budget) -> None:
    """``--compile``: the uncached forwards again with every block compiled, each shape's
    compilation time beside it."""
    device, P = r["device"], r["P"]
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


def print_speedups(result: dict[str, Any]) -> None:
    for length in result["lengths"]:
        v = length["variants"]
        v["speedup"] = {name: {e: v["eager"][e] / ms for e, ms in v[name].items()}
                        for name in ("cuda_graph", "compile") if name in v}
        for name, extents in v["speedup"].items():
            print(f"gen {length['gen_length']}: {name}: " + ", ".join(
                f"extent {e}: {v[name][e]:.2f} ms ({x:.3f}x eager)" for e, x in extents.items()), flush=True)


def add_projections(r: dict[str, Any], result: dict[str, Any], budget: Budget) -> None:
    """The profile and, per generation length, the projection from the measured times."""
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
        result["projections"].append(projections(length["gen_length"], r["P"], profile, r["settings"], length,
                                                 anchor_tps, budget.notes))


def forget_compiled(args: argparse.Namespace) -> None:
    """Drop the compiled blocks' code (and what it holds) before the anchor."""
    if args.compile:
        try:
            import torch._dynamo  # here: only --compile loads dynamo

            torch._dynamo.reset()
        except Exception:  # noqa: BLE001
            pass


def run_benchmark(args: argparse.Namespace, command: str) -> dict[str, Any]:
    budget = Budget(args.max_minutes)
    r = resolve(args)
    device = r["device"]
    result = new_result(args, r, command, budget)
    net = build_net(args, r, result)
    benches: dict[int, LengthBench] = {}
    for G in r["gens"]:
        if not budget.allows(f"gen {G} (eager forwards)", 30.0 if device.type == "cuda" else 0.0):
            continue
        benches[G] = LengthBench(net, device, r["P"], G, r["repeats"], r["warmup"], r["settings"], args.seed)
        result["lengths"].append(measure_length(benches[G], G, r, result["peak_flops"]["value"]))
    cuda_graphs(args, r, result, benches, budget)
    if args.compile:
        compiled(args, r, result, net, benches, budget)
    print_speedups(result)
    del benches, net
    forget_compiled(args)
    free_memory(device)
    if args.no_anchor:
        budget.notes.append("anchor skipped (--no-anchor)")
    elif budget.allows("the autoregressive anchor", 60.0 if device.type == "cuda" else 0.0):
        result["anchor"] = bench_anchor(device, r["dtype"], r["small"], r["P"], r["anchor_tokens"],
                                        r["anchor_repeats"], bool(args.compile), budget, args.seed)
    add_projections(r, result, budget)
    result["notes"].append("cached forwards time the network with slowfast/cache.py (no host synchronisation "
                           "inside a forward); the engine adds one device-to-host copy per forward for the cache's "
                           "statistics (FeatureCache.summary()), not timed here")
    result["elapsed_seconds"] = budget.elapsed()
    return result
