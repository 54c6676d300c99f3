"""``python -m slowfast eval``: its flags, the run, and the files it writes (``--json``, ``--card``)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from ...models.loading import load_model
from ...tasks.chat import chat_tasks
from ...tasks.registry import CHAIN_OPS, SHIPPED_SET, task_set
from ..common import at_least, check_output_path, command_line, run
from ..train.card import model_card
from .measures import evaluate_task
from .report import job_label, markdown, merge_decoding

DESCRIPTION = "``python -m slowfast eval``: does a model decode the way SlowFast is meant to be seen?"


def tasks_of(version: str) -> dict:
    """A task set's tasks and their chat forms (the prompt asked in the chat template) by name."""
    return {**task_set(version), **chat_tasks(0.0, version)}


TASKS = tasks_of(SHIPPED_SET)  # names only: every set has the same
KEPT = "nothing was written (the report, --json and --card are written when every task is done)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slowfast eval", description=DESCRIPTION)
    p.add_argument("--model", default="embedded")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from: {', '.join(TASKS)}")
    p.add_argument("--n", type=int, default=100, help="held-out prompts per task")
    p.add_argument("--task-set", default=SHIPPED_SET, choices=sorted(CHAIN_OPS),
                   help="which task set's problems (v2: chains of 4-6 operations, the shipped model's; v3: 1-10)")
    p.add_argument("--baseline-only", default="", help="comma-separated tasks of --tasks decoded by the baseline "
                   "alone (accuracy at one token per forward, no SlowFast or threshold runs)")
    p.add_argument("--slider-task", default=None,
                   help="task the slider sweep runs on, one of --tasks ('' = none; default: story when it is run)")
    p.add_argument("--slider-n", type=int, default=30, help="held-out prompts per slider value")
    p.add_argument("--also-blocks", action="append", default=[], metavar="TASK=B",
                   help="also evaluate TASK in semi-autoregressive blocks of B (e.g. arithmetic=32)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--card", action="store_true",
                   help="write the report into the model's card (its training_info.json and README.md): the card's "
                        "earlier reports of the same tasks are replaced, those of other tasks kept (a report that "
                        "covers this run's tasks and others too is refused before the run)")
    return p


def jobs_of(args: argparse.Namespace) -> list[tuple[str, Optional[int]]]:
    """(task, block length or None) per evaluation the flags ask for; ValueError on bad flags."""
    for flag in ("n", "slider_n", "threads"):
        at_least(getattr(args, flag), f"--{flag.replace('_', '-')}")
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ValueError(f"--tasks: {args.tasks!r} is not allowed; allowed: a comma-separated list of "
                         f"{', '.join(TASKS)}")
    if args.slider_task is None:
        args.slider_task = "story" if "story" in names else ""
    elif args.slider_task and args.slider_task not in names:
        raise ValueError(f"--slider-task: {args.slider_task!r} is not allowed; allowed: one of --tasks "
                         f"({', '.join(names)}) or '' (none)")
    only = [t.strip() for t in args.baseline_only.split(",") if t.strip()]
    if any(t not in names for t in only):
        raise ValueError(f"--baseline-only: {args.baseline_only!r} is not allowed; allowed: tasks of --tasks "
                         f"({', '.join(names)})")
    args.baseline_tasks = set(only)
    jobs: list[tuple[str, Optional[int]]] = [(name, None) for name in names]
    for spec in args.also_blocks:
        name, _, block = spec.partition("=")
        tasks = tasks_of(getattr(args, "task_set", SHIPPED_SET))
        if name not in tasks or not block.isdigit() or int(block) < 1 or tasks[name].gen_length % int(block):
            raise ValueError(f"--also-blocks: {spec!r} is not allowed; use TASK=B with TASK one of "
                             f"{', '.join(TASKS)} and B >= 1 dividing the task's generation length")
        jobs.append((name, int(block)))
    return jobs


def card_of(args: argparse.Namespace, model, labels: set[str]) -> Optional[Path]:
    """``--card``: the model's training_info.json, checked (writable, and its earlier reports
    replaceable by this run's) before the run; None without ``--card``."""
    if not args.card:
        return None
    info_path = Path(model.folder or "") / "training_info.json"
    if model.folder is None or not info_path.is_file():
        raise ValueError(f"--card: {args.model} has no training_info.json; allowed: a model exported by "
                         "python -m slowfast train (e.g. --model embedded)")
    check_output_path(str(info_path), "--card")
    merge_decoding(json.loads(info_path.read_text()).get("decoding", ""), "", labels)
    return info_path


def write_card(info_path: Path, md: str, labels: set[str]) -> None:
    """The report into the card: training_info.json's decoding section and the README made from it."""
    info = json.loads(info_path.read_text())
    info["decoding"] = merge_decoding(info.get("decoding", ""), md, labels)
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    (info_path.parent / "README.md").write_text(model_card(info) + "\n")


def evaluate(args: argparse.Namespace, command: str) -> int:
    jobs = jobs_of(args)
    tasks = tasks_of(args.task_set)
    if args.json is not None:
        check_output_path(str(args.json), "--json")  # before the run, so a finished run is never lost
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu", dtype="float32")
    labels = {job_label(name, block, tasks[name].gen_length) for name, block in jobs}
    info_path = card_of(args, model, labels)
    t0 = time.time()
    reports = []
    progress = lambda m: print(f"\r{m:60s}", end="", file=sys.stderr, flush=True)  # noqa: E731
    for name, block in jobs:
        reports.append(evaluate_task(model, tasks[name], args.n, block is None and name == args.slider_task,
                                     args.slider_n, progress, block, name in args.baseline_tasks))
    print(file=sys.stderr)
    md = markdown(reports, command, time.time() - t0, args.slider_n, args.threads)
    print(md)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in reports], indent=2) + "\n")
    if info_path is not None:
        write_card(info_path, md, labels)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = command_line(args, "python -m slowfast eval", parser)  # before jobs_of fills in --slider-task
    return run(lambda: evaluate(args, command), KEPT)
