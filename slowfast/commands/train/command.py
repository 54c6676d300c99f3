"""``python -m slowfast train``: every flag checked before anything is created, then the tokenizer
(fresh, resumed or the --init-from model's), the training run, and what Ctrl-C leaves behind."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import torch

from ...models.loading import load_model
from ...tasks.chat import CHAT_TEMPLATE
from ..common import command_line, run
from .card import model_card
from .data import Data
from .evals import evaluate_all
from .flags import build_parser, check_args, check_canvases, check_init_from, resume_state
from .loop import Trainer, log
from .tokenizer import build_tokenizer, check_tokenizer, load_tokenizer


def evaluate_export(args) -> int:
    """Score ``args.out`` as shipped (``load_model`` + its tokenizer) and refresh its card."""
    model = load_model(str(args.out), device="cpu", dtype="float32")
    data = Data(model.tokenizer)
    t0 = time.time()
    scores, samples = evaluate_all(model.net, data, args.eval_n)
    info_path = args.out / "training_info.json"
    info = json.loads(info_path.read_text())
    info["heldout"] = {**info["heldout"], **scores}
    info["eval_n"] = args.eval_n
    info["samples"] = {name: s[:5] for name, s in samples.items()}
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    (args.out / "README.md").write_text(model_card(info) + "\n")
    print(json.dumps({**scores, "seconds": round(time.time() - t0, 1)}))
    return 0


def checked(args) -> dict[str, Any]:
    """Every check before anything is created, so that a refused flag leaves no trace: the
    flags, the resume checkpoint, the --init-from folder, and a fresh tokenizer's canvases."""
    suffix_tasks, event_tasks, device = check_args(args)
    plan: dict[str, Any] = dict(suffix_tasks=suffix_tasks, event_tasks=event_tasks, device=device, st=None,
                                fresh_tok=None, tok_seconds=0.0)
    if args.evaluate:
        return plan
    plan["st"] = st = resume_state(args, device)
    if args.init_from is not None and st is None:
        check_init_from(args)
    if not (st is not None and (args.work_dir / "tokenizer" / "tokenizer.json").exists()) and args.init_from is None:
        t0 = time.time()
        plan["fresh_tok"] = build_tokenizer(args.vocab_size, args.seed)
        check_canvases(plan["fresh_tok"], args)
        plan["tok_seconds"] = time.time() - t0
    return plan


def tokenizer_of(args, plan: dict[str, Any], logfile: Path):
    """The run's tokenizer, saved in the work-dir: a fresh one, the resumed run's, or the --init-from model's."""
    tok_dir = args.work_dir / "tokenizer"
    if plan["fresh_tok"] is not None:
        plan["fresh_tok"].save_pretrained(str(tok_dir))
        tok = load_tokenizer(tok_dir)  # train on exactly what ships
        log(f"tokenizer: {len(tok)} tokens in {plan['tok_seconds']:.1f}s", logfile)
    elif plan["st"] is not None and (tok_dir / "tokenizer.json").exists():
        tok = load_tokenizer(tok_dir)
    else:  # continue training a shipped model: its own tokenizer
        tok = load_tokenizer(args.init_from)
        tok.save_pretrained(str(tok_dir))
    tok.chat_template = CHAT_TEMPLATE  # the chat forms of the tasks are trained (and shipped) in it
    check_tokenizer(tok)
    return tok


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = command_line(args, "python -m slowfast train", parser)  # rerunnable as printed
    trainer: list[Trainer] = []  # the run, once it exists: what Ctrl-C reports as kept

    def kept() -> str:
        return trainer[0].kept() if trainer else "nothing was written"

    def train() -> int:
        plan = checked(args)
        torch.set_num_threads(args.threads)
        if args.evaluate:
            return evaluate_export(args)
        args.work_dir.mkdir(parents=True, exist_ok=True)
        tok = tokenizer_of(args, plan, args.work_dir / "train.log")
        trainer.append(Trainer(args, tok, plan["device"], command, plan["st"]))
        trainer[0].train(plan["suffix_tasks"], plan["event_tasks"])
        return 0

    return run(train, kept)
