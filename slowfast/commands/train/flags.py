"""``python -m slowfast train``'s flags, every one checked before anything is created or loaded."""
from __future__ import annotations

import argparse
import math
import random
from pathlib import Path
from typing import Optional, Sequence

import torch

from ...models.loading import EMBEDDED_DIR, ModelLoadError, read_raw_config
from ..common import at_least, device_flag
from .data import EVENT_TASKS, GEN_LENGTHS, SUFFIX_TASKS, TASKS, TRAIN_TASKS, Data, batch_dest
from .tokenizer import SPECIALS

ROOT = Path(__file__).resolve().parents[3]
SHIPPED_DIR = EMBEDDED_DIR  # the model the app and the tests use: written only when --out names it
DEFAULT_WORK = ROOT / ".train"
DESCRIPTION = "Train the embedded dLLM: tokenizer + LLaDA-style masked diffusion on our tasks, on a CPU."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slowfast train", description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help="folder of the exported model, required unless --no-export (the shipped model, "
                        f"{SHIPPED_DIR.relative_to(ROOT)}, is replaced only when --out names it)")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help="resume checkpoints and logs")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from WORK_DIR/state.pt when it exists")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop (and export) after this long; 0: no limit")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=6)
    p.add_argument("--n-heads", type=int, default=8)
    p.add_argument("--mlp-hidden", type=int, default=704)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    defaults = {"story": 32, "arithmetic": 32, "copy": 8}  # the chat forms: none unless asked for
    for name in TRAIN_TASKS:
        p.add_argument(f"--batch-{name}", type=int, default=defaults.get(name, 0), help=f"{name} examples per step")
    p.add_argument("--suffix-p", type=float, default=0.0,
                   help="share of the --suffix-tasks examples masked from a random cut to the end "
                        "(the decoder's left-to-right states) instead of uniformly")
    p.add_argument("--chunk-p", type=float, default=0.0,
                   help="share of story examples masked in runs of 2-6 tokens instead of token by token "
                        "(a count and its noun hidden together while the next fact is visible)")
    p.add_argument("--event-p", type=float, default=0.0,
                   help="share of --event-tasks examples in which each event, with probability 1/2, is forced: "
                        "a story's count change has its change and noun masked and the counts before and after "
                        "it shown (the state of a decoder that wrote the count first and must infer the change "
                        "from it); a chain's step has its result and the result's next use masked and what it "
                        "is computed from shown (the state of a decoder that must compute the step)")
    p.add_argument("--event-tasks", default="story",
                   help=f"comma-separated tasks --event-p applies to (allowed: {', '.join(EVENT_TASKS)})")
    p.add_argument("--suffix-tasks", default=",".join(SUFFIX_TASKS),
                   help="comma-separated tasks --suffix-p applies to (a story is not decoded left to right: "
                        "its fixed words come first, then the choices, and a choice left of a written one "
                        "must be inferred from it, which suffix masking never trains)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="keep an exponential moving average of the weights with this decay (e.g. 0.998) and "
                        "evaluate and export it instead of the raw weights; 0: off")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-n", type=int, default=200)
    p.add_argument("--ckpt-minutes", type=float, default=3.0)
    p.add_argument("--no-export", action="store_true", help="do not write --out (experiments)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from the weights (and, on a fresh run, the tokenizer) of this exported folder, "
                        "e.g. slowfast/models/embedded to continue training the shipped model")
    p.add_argument("--evaluate", action="store_true",
                   help="only score the exported model in --out (loaded as the app loads it) on "
                        "--eval-n held-out problems per task, and rewrite its card")
    return p



def task_list(flag: str, value: str, allowed: Sequence[str]) -> set[str]:
    """The tasks a comma-separated ``flag`` names; one it may not name is refused."""
    tasks = {t for t in value.split(",") if t}
    unknown = sorted(tasks - set(allowed))
    if unknown:
        raise ValueError(f"{flag}: {', '.join(unknown)} not allowed; allowed: {', '.join(allowed)}")
    return tasks



MIN_VOCAB = 256 + len(SPECIALS)  # the byte-level alphabet and the special tokens
# flags that size the network: (our flag's dest, config.json's name)
SHAPE_FLAGS = (("d_model", "d_model"), ("n_layers", "n_layers"), ("n_heads", "n_heads"),
               ("mlp_hidden", "mlp_hidden_size"), ("max_seq_len", "max_sequence_length"))


def flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_args(args) -> tuple[set[str], set[str], torch.device]:
    """Every flag checked before anything is created or loaded; a bad one raises ValueError
    naming it. Returns the --suffix-tasks, the --event-tasks and the device."""
    suffix_tasks = task_list("--suffix-tasks", args.suffix_tasks, SUFFIX_TASKS)
    event_tasks = task_list("--event-tasks", args.event_tasks, EVENT_TASKS)
    lows = {"steps": 1, "threads": 1, "eval_every": 1, "eval_n": 1, "d_model": 1, "n_layers": 1, "n_heads": 1,
            "mlp_hidden": 1, "max_seq_len": 1, "warmup": 0, **{batch_dest(name): 0 for name in TRAIN_TASKS}}
    for dest, low in lows.items():
        at_least(getattr(args, dest), flag_name(dest), low)
    if not any(getattr(args, batch_dest(name)) for name in TRAIN_TASKS):
        raise ValueError(f"{', '.join(flag_name(batch_dest(name)) for name in TRAIN_TASKS)}: all 0 is not allowed; "
                         "at least one task needs examples per step")
    def share(v: float) -> bool:
        return 0.0 <= v <= 1.0

    for dest, ok, what in (("suffix_p", share, "a share in [0, 1]"), ("chunk_p", share, "a share in [0, 1]"),
                           ("event_p", share, "a share in [0, 1]"), ("min_lr_ratio", share, "a ratio in [0, 1]"),
                           ("lr", lambda v: v > 0, "a number above 0"),
                           ("weight_decay", lambda v: v >= 0, "a number >= 0"),
                           ("max_minutes", lambda v: v >= 0, "minutes >= 0 (0: no limit)"),
                           ("ckpt_minutes", lambda v: v >= 0, "minutes >= 0")):
        value = getattr(args, dest)
        if not (math.isfinite(value) and ok(value)):
            raise ValueError(f"{flag_name(dest)}: {value} is not allowed; allowed: {what}")
    if args.ema and not 0.0 < args.ema < 1.0:
        raise ValueError(f"--ema: {args.ema} is not allowed; allowed: a decay in (0, 1), or 0 (off)")
    d, h = args.d_model, args.n_heads
    if d % h or (d // h) % 2:
        heads = ", ".join(str(n) for n in range(1, d + 1) if d % n == 0 and (d // n) % 2 == 0)
        raise ValueError(f"--n-heads: {h} is not allowed with --d-model {d}; allowed: a divisor of --d-model that "
                         f"leaves an even head size for RoPE: {heads or 'none (make --d-model even)'}")
    if args.vocab_size < MIN_VOCAB:
        raise ValueError(f"--vocab-size: {args.vocab_size} is not allowed; it must be >= {MIN_VOCAB} "
                         f"(the 256 bytes and {len(SPECIALS)} special tokens)")
    device = device_flag(args.device)
    if args.out is None and (args.evaluate or not args.no_export):
        raise ValueError("--out: missing; allowed: --out FOLDER, the folder the model is exported to (the shipped "
                         f"model is {SHIPPED_DIR.relative_to(ROOT)}: name it to replace it), or --no-export")
    for path, flag in ((args.out, "--out"), (args.work_dir, "--work-dir")):
        if path is not None:
            check_folder(path, flag)
    if args.evaluate:
        for name in ("config.json", "training_info.json"):
            if not (args.out / name).is_file():
                raise ValueError(f"--out: {args.out} has no {name}; allowed with --evaluate: a folder this "
                                 "script exported")
    return suffix_tasks, event_tasks, device


def check_folder(path: Path, flag: str) -> None:
    """A folder we may create or write into: not a file, and a path the file system takes."""
    try:
        is_file = path.exists() and not path.is_dir()
    except OSError as exc:  # e.g. a name longer than the file system allows (errno 36)
        raise ValueError(f"{flag}: {str(path)[:80]}{'...' if len(str(path)) > 80 else ''} is not allowed "
                         f"({exc.strerror or exc}); allowed: a folder (created when missing)") from None
    if is_file:
        raise ValueError(f"{flag}: {path} is a file; allowed: a folder (created when missing)")


def check_init_from(args) -> None:
    """--init-from must be an exported folder whose network has the shape the flags ask for."""
    folder = args.init_from
    if not (folder / "config.json").is_file():
        raise ValueError(f"--init-from: {folder} is not allowed; allowed: an exported model folder (config.json, "
                         "model.safetensors and the tokenizer), e.g. slowfast/models/embedded")
    try:
        raw, _ = read_raw_config(folder)
    except ModelLoadError as exc:
        raise ValueError(f"--init-from: {exc}") from None
    for dest, key in SHAPE_FLAGS:
        if key in raw and raw[key] != getattr(args, dest):
            raise ValueError(f"{flag_name(dest)}: {getattr(args, dest)} is not allowed with --init-from {folder}, "
                             f"whose model has {key} {raw[key]}; allowed: {flag_name(dest)} {raw[key]}")


def resume_state(args, device: torch.device) -> Optional[dict]:
    """The work-dir's resume checkpoint (None on a fresh run); refused when the flags ask for
    another network or tokenizer than the one it holds."""
    state_path = args.work_dir / "state.pt"
    if not (args.resume and state_path.exists()):
        return None
    try:
        st = torch.load(state_path, map_location=device, weights_only=True)  # tensors and plain values only
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the same input error
        raise ValueError(f"--work-dir: {state_path} cannot be read ({type(exc).__name__}); allowed: a work-dir "
                         "this script wrote, or --no-resume to start over there") from None
    saved = st.get("args", {})
    for dest in [d for d, _ in SHAPE_FLAGS] + ["vocab_size"]:
        if dest in saved and saved[dest] != getattr(args, dest):
            flag = flag_name(dest)
            raise ValueError(f"{flag}: {getattr(args, dest)} is not allowed; the run in {args.work_dir} was "
                             f"started with {flag} {saved[dest]}; allowed: {flag} {saved[dest]} to resume it, or "
                             "another --work-dir (or --no-resume) for a new run")
    return st


def check_canvases(tok, args) -> None:
    """A fresh tokenizer must write each task's answers within its canvases, and the longest
    training canvas (prompt + generation) must fit --max-seq-len."""
    data = Data(tok)
    rng = random.Random(123)
    longest = 0
    for name, task in TASKS.items():
        lengths = GEN_LENGTHS.get(name, (task.gen_length,))
        for _ in range(100):
            ex = task.draw(rng, "train")
            longest = max(longest, len(data.encode(ex.prompt)) + max(lengths))
            if task.fills_canvas:  # a story is cut at the canvas
                continue
            n = len(data.encode(ex.target))
            if n > min(lengths):
                raise ValueError(f"--vocab-size: {args.vocab_size} is not allowed; with its {len(tok)} tokens an "
                                 f"answer of {name} takes {n} tokens, more than its canvas of {min(lengths)}; "
                                 f"allowed: a larger vocabulary (the default is 512)")
    if longest > args.max_seq_len:
        raise ValueError(f"--max-seq-len: {args.max_seq_len} is not allowed; a training canvas (prompt + "
                         f"generation) takes up to {longest} tokens; allowed: >= {longest}")


