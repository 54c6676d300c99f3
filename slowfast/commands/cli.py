"""``python -m slowfast generate|bench|sweep|train|eval``: the engine headless."""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from . import lmeval, train
from .bench import add_parser as add_bench_parser
from .common import run
from .evaluate.command import main as eval_main
from .generate import add_parser as add_generate_parser
from .sweep import add_parser as add_sweep_parser

# commands that parse their own flags: the rest of the command line is theirs
OWN_FLAGS = {"train": train.main, "eval": eval_main, "lm-eval": lmeval.main}
SWEEP_KEPT = "each finished point is in --out when given (rerun the same command to resume)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m slowfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate_parser(sub)
    add_bench_parser(sub)
    add_sweep_parser(sub)
    sub.choices["sweep"].set_defaults(kept=SWEEP_KEPT)
    sub.add_parser("train", help="train the embedded model (see python -m slowfast train --help)", add_help=False)
    sub.add_parser("eval", help="how a model decodes its task sets: accuracy, stages, speed, sliders",
                   add_help=False)
    sub.add_parser("lm-eval", help="lm-evaluation-harness with the slowfast model (python -m slowfast.harness; "
                                   "needs pip install lm_eval)", add_help=False)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in OWN_FLAGS:
        return OWN_FLAGS[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    return run(lambda: args.func(args), getattr(args, "kept", "nothing was written"))
