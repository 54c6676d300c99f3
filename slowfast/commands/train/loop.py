"""The training loop: AdamW with warmup and cosine decay, an optional EMA of the weights, held-out
evaluation every few steps, the best checkpoint exported, a resume checkpoint every few minutes."""
from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Optional

import torch

from ...models.loading import load_weights
from ...models.transformer import ModelConfig, Transformer
from ..evaluate.probes import count_inference, step_inference
from .card import export
from .data import TASKS, TRAIN_TASKS, Data, base_name, batch_dest, masked_diffusion_loss
from .evals import EVAL_TASKS, evaluate_all, probe_model, selection_score
from .tokenizer import EOS, MASK, PAD


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * net, parameter by parameter (buffers copied)."""
    torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


def lr_at(step: int, args, minutes: float = 0.0) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio * lr``. With ``--max-minutes`` the
    decay follows whichever of steps and wall time is further along, so a run that has to
    stop on time (a shared CPU is slower than planned) still ends at the low learning rate."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    if args.max_minutes:
        progress = max(progress, min(1.0, minutes / args.max_minutes))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def model_config(args, tok) -> ModelConfig:
    vocab = len(tok)
    return ModelConfig(
        d_model=args.d_model,
        n_heads=args.n_heads,
        n_kv_heads=args.n_heads,
        n_layers=args.n_layers,
        mlp_hidden_size=args.mlp_hidden,
        vocab_size=vocab,
        embedding_size=vocab,
        max_sequence_length=args.max_seq_len,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        weight_tying=False,
        mask_token_id=tok.convert_tokens_to_ids(MASK),
        eos_token_id=tok.convert_tokens_to_ids(EOS),
        pad_token_id=tok.convert_tokens_to_ids(PAD),
    )


def init_weights(net: Transformer, seed: int) -> None:
    """GPT-2 style init: N(0, 0.02), output projections scaled by 1/sqrt(2 * n_layers)."""
    g = torch.Generator().manual_seed(seed)
    std_out = 0.02 / math.sqrt(2 * net.cfg.n_layers)
    for name, p in net.named_parameters():
        if p.dim() == 1:
            continue  # RMSNorm weights stay 1
        std = std_out if name.endswith(("attn_out.weight", "ff_out.weight")) and "blocks" in name else 0.02
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g) * std)



def step_folder(out: Path, step: int) -> Path:
    """Where the checkpoint evaluated at ``step`` is exported: beside --out, ``<out>-step01200``."""
    return out.with_name(f"{out.name}-step{step:05d}")


def log(msg: str, file=None) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if file is not None:
        with open(file, "a") as f:
            f.write(line + "\n")




class Trainer:
    """One training run: the network, its optimiser and EMA, and where the run stands (``step``,
    the best score, the history of evaluations, the checkpoint and export it has written)."""

    def __init__(self, args, tok, device: torch.device, command: str, st: Optional[dict]):
        self.args, self.tok, self.device, self.command = args, tok, device, command
        self.work: Path = args.work_dir
        self.logfile, self.state_path = self.work / "train.log", self.work / "state.pt"
        self.data = Data(tok)
        self.cfg = model_config(args, tok)
        torch.manual_seed(args.seed)
        self.net = Transformer(self.cfg)
        init_weights(self.net, args.seed)
        self.net.to(device)
        decay = [p for n, p in self.net.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in self.net.named_parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
        self.step, self.elapsed_before, self.best, self.history, self.commands = 0, 0.0, -1.0, [], []
        self.lineage = {"steps_before": 0, "minutes_before": 0.0}  # training of the --init-from model
        self.saved_step: Optional[int] = None  # the step of the resume checkpoint on disk
        self.exported_step: Optional[int] = None  # the step of this run's export
        self.t_start = time.time()
        if st is not None:
            self.resume(st)
        elif args.init_from is not None:  # a resumed run continues its own weights
            self.start_from(args.init_from)
        self.ema_net = None  # the averaged weights that are evaluated and exported (--ema)
        if args.ema:
            self.ema_net = Transformer(self.cfg).to(device)
            self.ema_net.load_state_dict(st["ema"] if st is not None and st.get("ema") else self.net.state_dict())
            self.ema_net.requires_grad_(False)
        self.shipped = self.ema_net if self.ema_net is not None else self.net  # what run_eval scores and exports
        log(f"model: {self.net.num_parameters() / 1e6:.2f}M parameters, config {json.dumps(self.cfg.to_dict())}",
            self.logfile)
        log(f"command: {command}", self.logfile)
        self.commands.append(f"{command}  # from step {self.step}")
        self.machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else f"CPU, torch.set_num_threads({args.threads})")

    def resume(self, st: dict) -> None:
        self.net.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.step, self.elapsed_before, self.best, self.history = st["step"], st["elapsed"], st["best"], st["history"]
        self.commands = list(st.get("commands", []))
        self.lineage = st.get("lineage", self.lineage)
        self.saved_step = self.step
        log(f"resumed from {self.state_path} at step {self.step} ({self.elapsed_before / 60:.1f} min trained)",
            self.logfile)

    def start_from(self, folder: Path) -> None:
        """The weights of an exported folder, and its card's history of commands and training."""
        self.net.load_state_dict(load_weights(folder, self.device, torch.float32))
        log(f"weights replaced by those of {folder}", self.logfile)
        prior_path = folder / "training_info.json"
        if prior_path.exists():  # the card keeps the whole history of the weights
            prior = json.loads(prior_path.read_text())
            self.commands = list(prior.get("commands", [prior.get("command", "?")])) + self.commands
            self.lineage = {"steps_before": prior.get("steps_before", 0) + prior.get("step", 0),
                            "minutes_before": prior.get("minutes_before", 0.0) + prior.get("minutes_trained", 0.0)}

    def minutes(self) -> float:
        return (self.elapsed_before + time.time() - self.t_start) / 60

    def save_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        torch.save({"model": self.net.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                    "ema": self.ema_net.state_dict() if self.ema_net is not None else None,
                    "elapsed": self.elapsed_before + time.time() - self.t_start, "best": self.best,
                    "history": self.history, "commands": self.commands, "lineage": self.lineage,
                    "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()}
                    | {"work_dir": str(self.work)}}, tmp)
        os.replace(tmp, self.state_path)
        self.saved_step = self.step

    def kept(self) -> str:
        """What an interrupted run leaves behind, in one line."""
        parts = []
        if self.saved_step is not None:
            parts.append(f"the resume checkpoint {self.state_path} at step {self.saved_step} (the same command "
                         "continues from it)")
        if self.exported_step is not None:
            parts.append(f"the export in {self.args.out} from step {self.exported_step} (the best so far)")
        return "; ".join(parts) or f"no checkpoint or export yet (the log is {self.logfile})"

    def run_eval(self) -> float:
        t0 = time.time()
        scores, samples = evaluate_all(self.shipped, self.data, self.args.eval_n)
        score = selection_score(scores)
        rec = {"step": self.step, "minutes": round(self.minutes(), 2), **scores}
        # one forward on true held-out texts (see eval): a hidden count or change of a story, a hidden step of a chain
        probe = probe_model(self.shipped, self.data)
        if "story" in TASKS:
            rec["count_inference"] = count_inference(probe, TASKS["story"], self.args.eval_n)
        if "arithmetic" in TASKS:
            rec["step_inference"] = step_inference(probe, TASKS["arithmetic"], self.args.eval_n)
        self.history.append(rec)
        log(f"eval step {self.step}: " + " | ".join(
            f"{name} {EVAL_TASKS[name].primary_metric} {s[EVAL_TASKS[name].primary_metric]:.3f}"
            + (" (by operations " + " ".join(f"{k}:{a:.2f}" for k, (a, _) in s["by_ops"].items()) + ")"
               if "by_ops" in s else "") for name, s in scores.items())
            + f" | score {score:.3f} ({time.time() - t0:.0f}s)"
            + ("; story count inference forward {forward:.3f} backward {backward:.3f}".format(**rec["count_inference"])
               if "count_inference" in rec else "")
            + ("; chain step computed {computed:.3f}".format(**rec["step_inference"])
               if "step_inference" in rec else ""), self.logfile)
        for name, s in samples.items():
            log(f"  {s[0]['prompt']!r} -> {s[0]['output']!r}", self.logfile)
        if not self.args.no_export:  # every evaluated checkpoint in its own folder, the best also in --out
            self.export(rec, samples, step_folder(self.args.out, self.step))
            if score > self.best:
                self.best = score
                self.export(rec, samples)
        return score

    def export(self, rec: dict, samples: dict, out: Optional[Path] = None) -> None:
        args = self.args
        info = {"command": self.command, "commands": self.commands, "step": self.step,
                "minutes_trained": rec["minutes"], **self.lineage,
                "machine": self.machine, "torch": torch.__version__,
                "parameters": self.net.num_parameters(), "config": self.cfg.to_dict(), "heldout": rec,
                "eval_n": args.eval_n, "samples": {name: s[:5] for name, s in samples.items()},
                "args": {k: str(v) for k, v in vars(args).items()}}
        export(self.shipped, self.tok, out or args.out, info)
        if out is None:
            self.exported_step = self.step
        log(f"  exported to {out or args.out}" + ("" if out else " (best so far)"), self.logfile)

    def train_step(self, suffix_tasks: set[str], event_tasks: set[str]) -> tuple[float, dict[str, float]]:
        """One optimiser step on one batch of each task; returns its learning rate and losses."""
        args, data, step = self.args, self.data, self.step
        rng = random.Random(args.seed * 1_000_003 + step)
        gen = torch.Generator().manual_seed(args.seed * 7_919 + step)
        lr = lr_at(step, args, self.minutes())
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        losses = {}
        for name in TRAIN_TASKS:
            b = getattr(args, batch_dest(name))
            if b <= 0:
                continue
            tokens, plen = data.training_batch(name, rng, b)
            base = base_name(name)  # a chat task is masked as its base task is
            events = base in event_tasks
            loss = masked_diffusion_loss(self.net, tokens.to(self.device), plen, data.mask, gen,
                                         args.suffix_p if base in suffix_tasks else 0.0,
                                         args.chunk_p if base == "story" else 0.0,
                                         args.event_p if events else 0.0,
                                         data.events(name, tokens, plen) if events and args.event_p else None)
            loss.backward()
            losses[name] = loss.item()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        if self.ema_net is not None:
            ema_update(self.ema_net, self.net, args.ema)
        self.step += 1
        return lr, losses

    def train(self, suffix_tasks: set[str], event_tasks: set[str]) -> None:
        """Steps until ``--steps`` (or ``--max-minutes``), evaluating and checkpointing on the way;
        a last evaluation (and export) at the step it stopped."""
        args = self.args
        self.net.train()
        self.t_start = last_ckpt = t_log = time.time()
        running: dict[str, float] = {}
        while self.step < args.steps:
            if args.max_minutes and self.minutes() >= args.max_minutes:
                log(f"time limit of {args.max_minutes} min reached at step {self.step}", self.logfile)
                break
            lr, losses = self.train_step(suffix_tasks, event_tasks)
            for k, v in losses.items():
                running[k] = 0.98 * running.get(k, v) + 0.02 * v
            if self.step % 50 == 0 or self.step == 1:
                log(f"step {self.step}/{args.steps} lr {lr:.2e} loss " + " ".join(f"{k} {v:.3f}" for k, v in
                                                                                 running.items())
                    + f" | {(time.time() - t_log) / (50 if self.step > 1 else 1):.2f}s/step, "
                      f"{self.minutes():.1f} min", self.logfile)
                t_log = time.time()
            if self.step % args.eval_every == 0:
                self.run_eval()
                self.save_state()
                last_ckpt = time.time()
            elif time.time() - last_ckpt > args.ckpt_minutes * 60:
                self.save_state()
                last_ckpt = time.time()
        if self.step == 0:  # stopped before training anything (--max-minutes): an untrained model is never exported
            log("stopped before the first step: nothing evaluated or exported", self.logfile)
        elif not self.history or self.history[-1]["step"] != self.step:
            self.run_eval()
        self.save_state()
        log(f"done at step {self.step}; best score {self.best:.3f}", self.logfile)
