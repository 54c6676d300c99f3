"""``python -m slowfast bench gpu``: its flags, the run and the files it writes."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from ..common import command_line, run
from .report import markdown
from .run import run_benchmark
from .timing import slug

DESCRIPTION = ("``python -m slowfast bench gpu``: per-forward times of a LLaDA-8B-shaped model on one GPU,\n"
               "the autoregressive anchor, and a projection from them.")
KEPT = "nothing was written (--out and --md are written when the run ends)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m slowfast bench gpu``."""
    add = p.add_argument
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
    p.set_defaults(func=main, parser=p, kept=KEPT)


def main(args: Optional[argparse.Namespace | Sequence[str]] = None) -> int:
    """Run the benchmark; ``args``: parsed options (from ``add_arguments``) or an argv list."""
    if args is None or not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="python -m slowfast bench gpu", description=DESCRIPTION,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(parser)
        args = parser.parse_args(list(sys.argv[1:] if args is None else args))
    return run(lambda: benchmark(args), KEPT)


def benchmark(args: argparse.Namespace) -> int:
    res = run_benchmark(args, command_line(args, "python -m slowfast bench gpu"))
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

