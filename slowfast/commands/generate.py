"""``python -m slowfast generate``: decode one prompt step by step and print the text."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Optional

from .. import params
from ..cache import CACHE_PRESETS
from ..engine import GenerationSettings, drain
from ..gemma_run import new_run
from ..models.loading import load_model
from ..params import add_flag
from ..samplers import SAMPLERS, STEPS_SAMPLERS
from ..trace import Summary
from .common import check_output_path, finite, parse_param


def add_parser(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("generate", help="decode one prompt step by step and print the text")
    g.add_argument("--model", default="embedded",
                   help="'embedded', a local folder or a hub id: LLaDA (e.g. GSAI-ML/LLaDA-8B-Instruct), Dream "
                        "(Dream-org/Dream-v0-Instruct-7B), any transformers masked LM "
                        "(dllm-hub/ModernBERT-base-chat-v0.1) or DiffusionGemma (google/diffusiongemma-26B-A4B-it, "
                        "with --sampler entropy_bound)")
    g.add_argument("--prompt", required=True)
    g.add_argument("--sampler", default="slowfast", help=f"one of: {', '.join(SAMPLERS)}")
    for p in params.GENERATION:  # block and steps follow the generation length: one block, one token a forward
        follows = p.name in ("block_length", "steps")
        add_flag(g, p, default=None if follows else p.default,
                 default_help="the generation length" if follows else None)
    g.add_argument("--no-chat", action="store_true", help="do not apply the tokenizer's chat template")
    for p in params.LIMITS:
        add_flag(g, p)
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    g.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on CUDA), float32, bfloat16, float16")
    g.add_argument("--trace", default=None, metavar="OUT.json", help="write the step trace here")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="let the model folder build its tokenizer (or masked LM) with its own Python code (auto_map). "
                        "WARNING: this runs the folder's Python on this machine; only for folders you trust")
    for policy in SAMPLERS.values():  # each registered sampler's parameters (None: not given, its default)
        for p in policy.PARAMS:
            add_flag(g, p)
    g.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="any sampler parameter by our or the reference name, e.g. k_exploration_steps=4")
    g.add_argument("--cache", action="store_true",
                   help="use dLLM-Cache (prompt and response feature reuse; LLaDA and Dream, not masked LMs)")
    g.add_argument("--cache-preset", choices=sorted(CACHE_PRESETS), default=None,
                   help="the paper's cache settings by name (implies --cache)")
    for p in params.CACHE:
        add_flag(g, p)
    g.set_defaults(func=cmd_generate)


def cache_params(args: argparse.Namespace) -> Optional[dict[str, Any]]:
    """The cache parameters the flags ask for; None when the cache is off."""
    out: dict[str, Any] = dict(CACHE_PRESETS[args.cache_preset]) if args.cache_preset else {}
    out.update({k: finite(f"--{k}", getattr(args, k)) for k in ("kp", "kr", "rho") if getattr(args, k) is not None})
    if args.no_layer0_refresh:
        out["refresh_first_layer"] = False
    if not (args.cache or args.cache_preset):
        if out:
            raise ValueError(f"{', '.join(out)}: cache parameters need --cache (or --cache-preset)")
        return None
    return out


def sampler_params(args: argparse.Namespace) -> dict[str, Any]:
    out = {p.name: finite(p.flag, getattr(args, p.name)) for policy in SAMPLERS.values() for p in policy.PARAMS
           if getattr(args, p.name, None) is not None}
    for text in args.param:
        name, value = parse_param(text)
        out[name] = finite(f"--param {name}", value)
    return out


def summary_line(s: Summary) -> str:
    line = (f"NFE {s.nfe} | forwards {s.forwards} | tokens fed {s.tokens_fed} | {s.seconds:.2f} s | "
            f"{s.tokens_per_second:.1f} tokens/s")
    if s.cache_bytes is not None:
        line += f" | cache {s.cache_bytes / 2**20:.1f} MiB"
    return line


def settings_of(args: argparse.Namespace) -> GenerationSettings:
    """The run's settings from the flags, checked (ValueError naming the flag) before a model is loaded."""
    if args.steps is not None and args.sampler in SAMPLERS and args.sampler not in STEPS_SAMPLERS:
        raise ValueError(f"--steps: {args.steps} is not allowed with the {args.sampler} sampler (it stops when the "
                         f"canvas is full); allowed: --steps with the {' or '.join(STEPS_SAMPLERS)} sampler")
    settings = GenerationSettings(
        sampler=args.sampler, gen_length=args.gen_length,
        block_length=args.gen_length if args.block_length is None else args.block_length,
        steps=args.gen_length if args.steps is None else args.steps,
        temperature=args.temperature, seed=args.seed, cfg_scale=args.cfg_scale, chat=not args.no_chat,
        params=sampler_params(args), max_forwards_per_block=args.max_forwards_per_block,
        cache=cache_params(args),
    )
    settings.policy()  # bad settings fail here, before a model is loaded
    return settings


def cmd_generate(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if not args.prompt.strip():
        raise ValueError("prompt: empty; allowed: any non-empty text")
    if args.trace is not None:
        check_output_path(args.trace, "--trace")  # before the run, so a finished run is never lost
    model = load_model(args.model, device=args.device, dtype=args.dtype,
                       trust_remote_code=args.trust_remote_code)
    canvas = getattr(model, "canvas_length", None)  # DiffusionGemma: its blocks are its canvases
    if canvas is not None and args.block_length is None:
        settings.block_length = canvas
    trace = drain(new_run(model, args.prompt, settings))
    status = 0
    if trace.stats.error:  # the engine ended it (a cap): the partial trace is still written
        print(f"error: {trace.stats.error}", file=sys.stderr)
        status = 1
    print(trace.text)
    print(summary_line(trace.stats))
    if args.trace is not None:
        try:
            trace.save(args.trace)
        except OSError as exc:  # the text and summary above are the run's; only the file is missing
            print(f"error: --trace: {args.trace} could not be written ({exc.strerror or exc}); the run's text and "
                  "summary are above", file=sys.stderr)
            return 1
        print(f"trace written to {args.trace}")
    return status
