"""``python -m slowfast bench``: benchmarks over the engine, every ratio measured side by side in one run.

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
``gpu``: LLaDA-8B-shaped forwards on one GPU, the Llama-3-8B anchor, a projection (``commands/gpu_bench``).
"""
from __future__ import annotations

import argparse

from ..gpu_bench.command import add_arguments as add_gpu_arguments
from . import cache, overhead, render, samplers, tasks


def add_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="benchmarks: cache forward cost, sampler speedups, task sets, engine overhead")
    bs = b.add_subparsers(dest="bench", required=True)
    for module in (cache, samplers, render, tasks, overhead):
        module.add_parser(bs)
    g = bs.add_parser("gpu", help="LLaDA-8B-shaped forwards on one GPU, the Llama-3-8B anchor, a projection "
                                  "(--small: a shrunken shape that runs on a CPU)")
    add_gpu_arguments(g)
