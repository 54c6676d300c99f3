"""``python -m slowfast generate|bench|sweep|train|eval``: the engine headless."""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from .bench import add_parser as add_bench_parser
from .cache import CACHE_PRESETS
from . import params
from .params import add_flag
from .samplers import SAMPLERS, STEPS_SAMPLERS
from .sweep import add_parser as add_sweep_parser
from .trace import Summary

def finite(flag: str, value: Any) -> Any:
    """``value``, refused (ValueError) when it is a float that is not finite (inf, nan)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{flag}: {value} is not allowed; it must be a finite number")
    return value


def parse_param(text: str) -> tuple[str, Any]:
    """``name=value`` with value read as int, float, bool or string."""
    if "=" not in text:
        raise ValueError(f"--param: {text!r} is not allowed; use name=value")
    name, raw = text.split("=", 1)
    for cast in (int, float):
        try:
            return name.strip(), cast(raw)
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        return name.strip(), raw.lower() == "true"
    return name.strip(), raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m slowfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="decode one prompt step by step and print the text")
    g.add_argument("--model", default="embedded",
                   help="'embedded', a local folder or a hub id: LLaDA (e.g. GSAI-ML/LLaDA-8B-Instruct), Dream "
                        "(Dream-org/Dream-v0-Instruct-7B) or any transformers masked LM "
                        "(dllm-hub/ModernBERT-base-chat-v0.1)")
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

    add_bench_parser(sub)
    add_sweep_parser(sub)
    sub.add_parser("train", help="train the embedded model (see slowfast/train.py --help)", add_help=False)
    sub.add_parser("eval", help="how a model decodes its task sets: accuracy, stages, speed, sliders",
                   add_help=False)
    sub.add_parser("lm-eval", help="lm-evaluation-harness with the slowfast model (python -m slowfast.harness; "
                                   "needs pip install lm_eval)", add_help=False)
    return parser


def cache_params(args: argparse.Namespace) -> Optional[dict[str, Any]]:
    """The cache parameters the flags ask for; None when the cache is off."""
    params: dict[str, Any] = dict(CACHE_PRESETS[args.cache_preset]) if args.cache_preset else {}
    params.update({k: finite(f"--{k}", getattr(args, k)) for k in ("kp", "kr", "rho") if getattr(args, k) is not None})
    if args.no_layer0_refresh:
        params["refresh_first_layer"] = False
    if not (args.cache or args.cache_preset):
        if params:
            raise ValueError(f"{', '.join(params)}: cache parameters need --cache (or --cache-preset)")
        return None
    return params


def sampler_params(args: argparse.Namespace) -> dict[str, Any]:
    params = {p.name: finite(p.flag, getattr(args, p.name)) for policy in SAMPLERS.values() for p in policy.PARAMS
              if getattr(args, p.name, None) is not None}
    for text in args.param:
        name, value = parse_param(text)
        params[name] = finite(f"--param {name}", value)
    return params


def summary_line(s: Summary) -> str:
    line = (f"NFE {s.nfe} | forwards {s.forwards} | tokens fed {s.tokens_fed} | {s.seconds:.2f} s | "
            f"{s.tokens_per_second:.1f} tokens/s")
    if s.cache_bytes is not None:
        line += f" | cache {s.cache_bytes / 2**20:.1f} MiB"
    return line


def check_output_path(path: str, flag: str) -> None:
    """A file we can write at ``path`` (its folder exists and takes a new file; it is not a folder)."""
    if not str(path).strip():
        raise ValueError(f"{flag}: {str(path)!r} is not allowed; allowed: a file path")
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{flag}: {path} is a folder; allowed: a file path")
    folder = target.parent
    if not folder.is_dir():
        raise ValueError(f"{flag}: the folder {folder} does not exist; create it first")
    try:  # a real write, as the run's will be (permissions alone miss read-only mounts and /proc)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{target.name}.", suffix=".check"):
            pass
    except OSError as exc:
        raise ValueError(f"{flag}: the folder {folder} is not writable ({exc.strerror or exc})") from None


def cmd_generate(args: argparse.Namespace) -> int:
    from .engine import GenerationSettings, Run, drain
    from .models.loading import load_model

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
    if not args.prompt.strip():
        raise ValueError("prompt: empty; allowed: any non-empty text")
    if args.trace is not None:
        check_output_path(args.trace, "--trace")  # before the run, so a finished run is never lost
    model = load_model(args.model, device=args.device, dtype=args.dtype,
                       trust_remote_code=args.trust_remote_code)
    trace = drain(Run(model, args.prompt, settings))
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


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from .train import main as train_main

        return train_main(argv[1:])
    if argv and argv[0] == "eval":
        from .evaluate import main as eval_main

        return eval_main(argv[1:])
    if argv and argv[0] == "lm-eval":
        try:
            from .harness import main as harness_main
        except ImportError as exc:
            print(f"error: lm-eval needs lm_eval ({exc}); allowed: pip install lm_eval, then run this again",
                  file=sys.stderr)
            return 2
        return harness_main(argv[1:])
    args = build_parser().parse_args(argv)
    from .models.loading import ModelLoadError

    try:
        return args.func(args) if args.command in ("bench", "sweep") else cmd_generate(args)
    except (ValueError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
