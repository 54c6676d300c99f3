"""Train the embedded dLLM: tokenizer + LLaDA-style masked diffusion on our tasks, on a CPU.

The objective is LLaDA's: draw t ~ U(eps, 1) per example, mask each response token with
probability t (the prompt is never masked), and minimise the cross-entropy of the masked
tokens weighted by 1/t, summed and divided by the number of response tokens (LLaDA SFT).
Training inputs look exactly like the engine's canvas, ``encode_prompt(prompt) +
gen_length masks``: answers are padded with EOS to the canvas, stories fill it (cut where
it ends). The canvas length is drawn per batch from a few lengths around the task's
``gen_length``, and some batches are cut short on the right, so the model also works at
other lengths and on SlowFast's truncated fast-stage forwards. There is no attention mask,
so every sequence of a batch has the same length: a batch holds one task, one prompt
length and one canvas length.

Everything is seeded (initialisation, the data of step s, the masks of step s), and a
resume checkpoint is written every few minutes, so an interrupted run continues where it
stopped (``--resume``). Held-out scores come from ``greedy_decode``, a batched copy of the
baseline sampler at one token per step (low-confidence remasking, a single block).

    python -m slowfast train --steps 6000 --out slowfast/models/embedded
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .models.loading import save_checkpoint
from .models.transformer import ModelConfig, Transformer
from .tasks import TASKS, Example, Task

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "models" / "embedded"
DEFAULT_WORK = ROOT / ".train"
EOS, MASK, PAD = "<|endoftext|>", "<|mdm_mask|>", "<|pad|>"
SPECIALS = [EOS, MASK, PAD]  # ids 0, 1, 2
EPS = 1e-3  # LLaDA's eps: p_mask = (1 - eps) * t + eps
# canvas lengths drawn per batch (each task's own gen_length is among them)
GEN_LENGTHS = {"story": (48, 64, 80, 96, 112, 128), "arithmetic": (64, 72, 80), "copy": (16, 24)}
TRUNCATE_P = 0.25  # share of batches cut short on the right, as SlowFast's fast forwards are
CHUNK = (2, 6)  # run lengths of --chunk-p masking
SUFFIX_TASKS = ("story", "arithmetic")  # the chains that --suffix-p may apply to (--suffix-tasks)
EVENT_TASKS = ("story", "arithmetic")  # the tasks with forced events that --event-p may apply to
Forced = tuple[tuple[int, ...], tuple[int, ...]]  # an event: response positions to hide, to show
BARS = {"story": 0.90, "arithmetic": 0.95, "copy": 0.99}  # held-out accuracy bars (issue 14)


# ----------------------------------------------------------------------------- tokenizer
def tokenizer_corpus(n_task_examples: int = 20000, seed: int = 0) -> list[str]:
    """Task texts, so task words (" answer", " apples") get their own tokens."""
    rng = random.Random(seed)
    lines: list[str] = []
    for name in TASKS:
        task = TASKS[name]
        for _ in range(n_task_examples):
            ex = task.draw(rng, "train")
            lines.append(ex.prompt + ex.target)
    return lines


def build_tokenizer(vocab_size: int, seed: int = 0):
    """Byte-level BPE with every digit its own token; returns a PreTrainedTokenizerFast.

    Digits are split off before BPE (``Digits(individual_digits=True)``), so numbers are
    read and written digit by digit. No post-processor: encoding adds no BOS/EOS, exactly
    as training feeds the model.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(seed=seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        mask_token=MASK,
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    return fast


def load_tokenizer(folder: Path):
    from .models.loading import load_tokenizer as load  # quiet about config.json's model_type

    return load(Path(folder))


def check_tokenizer(tok) -> None:
    """Round-trip every task's texts; refuse a tokenizer that adds specials or loses text."""
    rng = random.Random(123)
    for name, task in TASKS.items():
        for _ in range(50):
            ex = task.draw(rng, "heldout")
            for text in (ex.prompt, ex.target):
                ids = tok(text)["input_ids"]
                if tok.decode(ids, skip_special_tokens=True) != text:
                    raise RuntimeError(f"tokenizer does not round-trip {text!r}")
    ids = tok("12+3")["input_ids"]
    if len(ids) != 4:
        raise RuntimeError("digits must be single tokens")


# ----------------------------------------------------------------------------- data
class Data:
    """Turns task examples into equal-length token batches (one task, one prompt length)."""

    def __init__(self, tok):
        self.tok = tok
        self.eos = tok.convert_tokens_to_ids(EOS)
        self.mask = tok.convert_tokens_to_ids(MASK)
        self.strings = [tok.decode([i]) for i in range(len(tok))]  # each id's text, for count_events

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text)["input_ids"])

    def count_events(self, tokens: torch.Tensor, prompt_len: int) -> list[list[tuple[int, int, int]]]:
        """Per row, the (change, noun, new count) response positions of its story's count changes."""
        from .tasks.story import count_events

        return [count_events([self.strings[i] for i in row]) for row in tokens[:, prompt_len:].tolist()]

    def events(self, name: str, tokens: torch.Tensor, prompt_len: int) -> list[list[Forced]]:
        """Per row, the forced events of task ``name`` (see ``draw_masks``): a story's count
        changes (``story_forced``), a chain's worked steps (``tasks.arithmetic.step_events``)."""
        if name == "story":
            return [story_forced(row) for row in self.count_events(tokens, prompt_len)]
        if name == "arithmetic":
            from .tasks.arithmetic import step_events

            return [step_events([self.strings[i] for i in row]) for row in tokens[:, prompt_len:].tolist()]
        raise ValueError(f"task {name!r} has no forced events; those that do: {', '.join(EVENT_TASKS)}")

    def response_ids(self, ex: Example, gen_length: int, fills_canvas: bool = False) -> list[int]:
        """The answer on a canvas of ``gen_length``: cut there (stories) or padded with EOS."""
        ids = self.encode(ex.target)
        if fills_canvas:
            if len(ids) < gen_length:
                raise ValueError(f"target of {len(ids)} tokens does not fill gen_length {gen_length}")
            return ids[:gen_length]
        if len(ids) > gen_length:
            raise ValueError(f"target of {len(ids)} tokens exceeds gen_length {gen_length}: {ex.target!r}")
        return ids + [self.eos] * (gen_length - len(ids))

    def task_batch(self, task: Task, rng: random.Random, batch: int, split: str = "train",
                   gen_length: Optional[int] = None):
        """``batch`` examples that share one prompt length; returns (tokens, prompt_len, examples)."""
        gen_length = gen_length or task.gen_length
        first = task.draw(rng, split)
        plen = len(self.encode(first.prompt))
        exs = [first]
        while len(exs) < batch:
            ex = task.draw(rng, split)
            if len(self.encode(ex.prompt)) == plen:
                exs.append(ex)
        rows = [self.encode(ex.prompt) + self.response_ids(ex, gen_length, task.fills_canvas) for ex in exs]
        return torch.tensor(rows, dtype=torch.long), plen, exs

    def training_batch(self, name: str, rng: random.Random, batch: int):
        """A training batch of task ``name``: a random canvas length, sometimes cut on the right."""
        gen_length = rng.choice(GEN_LENGTHS.get(name, (TASKS[name].gen_length,)))
        tokens, plen, _ = self.task_batch(TASKS[name], rng, batch, "train", gen_length)
        if rng.random() < TRUNCATE_P:
            keep = rng.randint(min(4, gen_length), gen_length)
            tokens = tokens[:, :plen + keep]
        return tokens, plen


def story_forced(events: list[tuple[int, int, int]]) -> list[Forced]:
    """A story's count changes ``(change, noun, new count)`` as forced events: the change and
    its noun hidden, the count it led to and the count before it (when in the response) shown."""
    return [((k, noun), (new,) + ((events[i - 1][2],) if i else ())) for i, (k, noun, new) in enumerate(events)]


# ----------------------------------------------------------------------------- objective
def masked_diffusion_loss(net: Transformer, tokens: torch.Tensor, prompt_len: int, mask_id: int,
                          gen: torch.Generator, suffix_p: float = 0.0, chunk_p: float = 0.0,
                          event_p: float = 0.0, events: Optional[list[list[Forced]]] = None
                          ) -> torch.Tensor:
    """LLaDA loss on ``tokens`` (prompt, then response) with the masks of ``draw_masks``:
    cross-entropy of the masked response tokens, each weighted by 1 / (its masking
    probability), summed and divided by the response length, averaged over the batch."""
    B, T = tokens.shape
    L = T - prompt_len
    masked, p_tok = draw_masks(B, L, gen, suffix_p, chunk_p, event_p, events)
    masked = masked.to(tokens.device)
    p_tok = p_tok.to(tokens.device)
    noisy = tokens.clone()
    noisy[:, prompt_len:][masked] = mask_id
    logits = net(noisy)[:, prompt_len:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens[:, prompt_len:].reshape(-1),
                         reduction="none").view(B, L)
    return ((ce * masked / p_tok).sum(1) / L).mean()


def draw_masks(B: int, L: int, gen: torch.Generator, suffix_p: float = 0.0, chunk_p: float = 0.0,
               event_p: float = 0.0, events: Optional[list[list[Forced]]] = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of ``B`` responses' ``L`` tokens to mask, and each token's masking probability.

    LLaDA's: per-example t, every response token masked with probability t. t is drawn
    stratified over the batch (one uniform offset, evenly spaced), a standard
    variance reduction that keeps the marginal of each t uniform.

    With ``suffix_p`` > 0 that share of the examples is masked from a uniformly drawn cut
    to the end instead (the state a decoder is in when everything left of a point is
    written), and weighted by 1 / (masked share), the same scale as the 1/t weighting.

    With ``chunk_p`` > 0 that share of the (other) examples is masked in chunks: the response
    is cut into runs of 2-6 tokens and each run is masked with probability t (each token
    still with probability t, so the 1/t weighting is unchanged). A choice and the words that
    agree with it are then often hidden together while the sentence after them is visible:
    the state a decoder is in when it wrote a later fact first and must infer what led to it.

    With ``event_p`` > 0 and ``events`` (per example, its forced events: response positions
    to hide and to show) that share of the (non-suffix) examples has each of its events,
    with probability 1/2, forced: its positions to hide masked, those to show unmasked. An
    event that would show what an earlier forced one hid (or hide what it showed) is left
    alone. A story's count change (``story_forced``) hides the change and its noun and shows
    the counts after and before it: the state where a decoder wrote the count first, with
    what determines the change. A chain's step (``tasks.arithmetic.step_events``) hides its
    result and that result's next use and shows what it is computed from: the state where
    a decoder must compute the step rather than copy it. Events cut by the canvas (any
    position at or past ``L``) are left alone. Every masked token's loss is weighted by
    1 / (its masking probability): 1 for the forced ones.
    """
    u = torch.rand(1, generator=gen)
    t = ((u + torch.arange(B) / B) % 1.0)[torch.randperm(B, generator=gen)]
    p_mask = (1 - EPS) * t + EPS
    masked = torch.rand(B, L, generator=gen) < p_mask[:, None]
    if suffix_p > 0:
        suffix = torch.rand(B, generator=gen) < suffix_p
        cut = torch.randint(0, L, (B,), generator=gen)
        masked = torch.where(suffix[:, None], torch.arange(L)[None, :] >= cut[:, None], masked)
        p_mask = torch.where(suffix, (L - cut).float() / L, p_mask)
    if chunk_p > 0:
        chunky = torch.rand(B, generator=gen) < chunk_p
        ends = torch.randint(CHUNK[0], CHUNK[1] + 1, (B, L), generator=gen).cumsum(1)
        chunk_of = torch.searchsorted(ends, torch.arange(L).expand(B, L).contiguous(), right=True)
        by_chunk = torch.rand(B, L, generator=gen).gather(1, chunk_of) < p_mask[:, None]
        if suffix_p > 0:
            chunky &= ~suffix
        masked = torch.where(chunky[:, None], by_chunk, masked)
    p_tok = p_mask[:, None].expand(B, L).clone()  # each token's probability of being masked
    if event_p > 0 and events is not None:
        picked = torch.rand(B, generator=gen) < event_p
        if suffix_p > 0:
            picked &= ~suffix
        for b in torch.nonzero(picked).flatten().tolist():
            hid: set[int] = set()
            showed: set[int] = set()
            for hide, show in events[b]:
                if max(hide + show) >= L or not torch.rand(1, generator=gen).item() < 0.5:
                    continue
                if hid.intersection(show) or showed.intersection(hide):
                    continue
                masked[b, list(hide)] = True
                p_tok[b, list(hide)] = 1.0
                masked[b, list(show)] = False
                p_tok[b, list(show)] = 1.0  # (never masked here: their weight is unused)
                hid.update(hide)
                showed.update(show)
    return masked, p_tok


# ----------------------------------------------------------------------------- decoding
@torch.no_grad()
def greedy_decode(net: Transformer, prompts: torch.Tensor, gen_length: int, mask_id: int) -> torch.Tensor:
    """The baseline sampler at one token per step, batched: start from an all-mask response;
    each step unmask the most confident masked position (softmax prob of its argmax) with
    its argmax token. Returns the response ids ``[B, gen_length]``."""
    B, P = prompts.shape
    device = next(net.parameters()).device
    x = torch.cat([prompts, torch.full((B, gen_length), mask_id, dtype=torch.long)], dim=1).to(device)
    rows = torch.arange(B, device=device)
    for _ in range(gen_length):
        logits = net(x)[:, P:].float()
        probs = torch.softmax(logits, dim=-1)
        conf, tok = probs.max(dim=-1)
        still = x[:, P:] == mask_id
        conf = torch.where(still, conf, torch.full_like(conf, -math.inf))
        pos = conf.argmax(dim=-1)
        x[rows, P + pos] = tok[rows, pos]
    return x[:, P:].cpu()


def cut_at_eos(ids: Sequence[int], eos_ids: set[int]) -> list[int]:
    out = []
    for i in ids:
        if int(i) in eos_ids:
            break
        out.append(int(i))
    return out


def evaluate_task(net: Transformer, data: Data, task: Task, n: int, seed: int = 0, batch: int = 128):
    """Held-out scores of ``task`` with ``greedy_decode``; returns (mean metrics, samples)."""
    exs = task.examples("heldout", n, seed)
    by_len: dict[int, list[Example]] = {}
    for ex in exs:
        by_len.setdefault(len(data.encode(ex.prompt)), []).append(ex)
    totals: dict[str, float] = {}
    samples = []
    net.eval()
    for plen, group in sorted(by_len.items()):
        for i in range(0, len(group), batch):
            chunk = group[i:i + batch]
            prompts = torch.tensor([data.encode(ex.prompt) for ex in chunk], dtype=torch.long)
            out = greedy_decode(net, prompts, task.gen_length, data.mask)
            for ex, ids in zip(chunk, out.tolist()):
                text = data.tok.decode(cut_at_eos(ids, {data.eos}), skip_special_tokens=True)
                sc = task.score(ex, text)
                for k, v in sc.items():
                    if isinstance(v, (bool, int, float)):
                        totals[k] = totals.get(k, 0.0) + float(v)
                samples.append({"prompt": ex.prompt, "output": text, "target": ex.target, **sc})
    net.train()
    order = {ex.prompt: i for i, ex in enumerate(exs)}
    samples.sort(key=lambda s: order[s["prompt"]])
    return {k: v / len(exs) for k, v in totals.items()}, samples


def evaluate_all(net: Transformer, data: Data, n: int) -> tuple[dict, dict]:
    """Held-out metrics and samples of every task."""
    scores, samples = {}, {}
    for name, task in TASKS.items():
        scores[name], samples[name] = evaluate_task(net, data, task, n)
    return scores, samples


def selection_score(scores: dict) -> float:
    """The weakest task relative to its bar: what picks the exported checkpoint."""
    return min(scores[name][TASKS[name].primary_metric] / bar for name, bar in BARS.items())


# ----------------------------------------------------------------------------- training
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


def export(net: Transformer, tok, out: Path, info: dict) -> None:
    """Write the shipped folder: config.json + model.safetensors, the tokenizer, training info."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        for f in tmp.iterdir():
            f.unlink()
    tmp.mkdir(parents=True, exist_ok=True)
    save_checkpoint(net, tmp)
    tok.save_pretrained(str(tmp))
    # name the class every transformers version knows, and drop load-time noise
    tc_path = tmp / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("is_local", "local_files_only"):
        tc.pop(key, None)
    tc_path.write_text(json.dumps(tc, indent=2) + "\n")
    (tmp / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
    (tmp / "README.md").write_text(model_card(info) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        f.chmod(0o644)
        os.replace(f, out / f.name)
    tmp.rmdir()


TASK_LINES = {
    "story": "- `story`: `Story: Mia has two red apples .` -> a story that fills the canvas: events "
             "(finds / loses / a friend gives, with free places, counts and names, and fillers) each "
             "followed by `Now Mia has four red apples .`; scored by a checker (grammar and every fact "
             "consistent), generation length 96, no EOS.",
    "arithmetic": "- `arithmetic`: `Q: 7+5-3+8-6=? A:` -> ` 7+5=12, 12-3=09, 09+8=17, 17-6=11. The answer is 11.` "
                  "(4-6 operations, operands 1-9, every intermediate result 0-29 written with two digits, "
                  "so the layout depends only on the number of operations), "
                  "generation length 64, EOS after the answer.",
    "copy": "- `copy`: `Copy: c f a k e q x z. A:` -> ` c f a k e q x z.` (always 8 letters), generation "
            "length 16: the parallel-friendly contrast.",
}
METRIC_NAMES = {"consistent": "story checker pass", "answer_correct": "final answer correct",
                "exact_match": "exact match", "sentences": "sentences checked (mean)"}


def model_card(info: dict) -> str:
    """The README.md of the exported folder, from the numbers of the export (and of eval)."""
    h = info["heldout"]
    cfg = info["config"]
    args = info.get("args", {})  # the run's flags, as strings

    def share(name: str) -> bool:  # was this share flag of the run on?
        return float(args.get(name, 0) or 0) > 0

    event_tasks = args.get("event_tasks", "story").split(",")
    lines = [
        "# slowfast embedded dLLM",
        "",
        "A small masked-diffusion language model (LLaDA objective, LLaDA-family architecture:",
        "bidirectional attention, RoPE, SwiGLU, RMSNorm) trained from scratch by `slowfast/train.py`,",
        "shipped so the explorer, the samplers and the tests run offline. Its tasks are built so",
        "that decoding has the structure a real dLLM's has: free choices make far positions",
        "uncertain, and what depends on a choice becomes certain once the choice is written.",
        "",
        "## Model",
        "",
        f"- {info['parameters'] / 1e6:.2f}M parameters: d_model {cfg['d_model']}, {cfg['n_layers']} layers, "
        f"{cfg['n_heads']} heads, SwiGLU hidden {cfg['mlp_hidden_size']}, vocabulary {cfg['vocab_size']}, "
        f"untied embeddings, RoPE theta {cfg['rope_theta']:g}, context {cfg['max_sequence_length']}.",
        f"- Special ids: EOS `<|endoftext|>` = {cfg['eos_token_id']}, mask `<|mdm_mask|>` = "
        f"{cfg['mask_token_id']}, pad `<|pad|>` = {cfg['pad_token_id']}.",
        "- Tokenizer (`tokenizer.json`, loads with `transformers.AutoTokenizer`): byte-level BPE",
        "  trained on task texts; every digit is its own token; no BOS/EOS is added on encoding and",
        "  there is no chat template, so a prompt is fed as plain text.",
        "",
        "## Data and objective",
        "",
        *[TASK_LINES.get(name, f"- `{name}`") for name in h if name in TASKS],
        "- Held-out problems (a fixed hash split of the prompt in `slowfast/tasks`) are never trained on.",
        "- LLaDA loss: t ~ U(0, 1) per example (stratified over the batch), response tokens",
        "  masked with probability t (prompts never), cross-entropy of masked tokens / t, divided by",
        "  the response length. The canvas length is drawn per batch around each task's length and a",
        f"  quarter of the batches are cut short on the right ({TRUNCATE_P:.0%}), as SlowFast's fast",
        "  forwards are.",
        *([f"- A share of the {' and '.join(args.get('suffix_tasks', 'story,arithmetic').split(','))} "
           f"examples ({args['suffix_p']}) is masked from a random "
           "cut to the end instead (the states of a decoder that has written everything left of a point), "
           "weighted by 1 / (masked share)."] if share("suffix_p") else []),
        *([f"- A share of the story examples ({args['chunk_p']}) is masked in runs of {CHUNK[0]}-{CHUNK[1]} "
           "tokens (each run with probability t), so a count and its noun are often hidden together while the "
           "next fact is visible: the state of a decoder that wrote a later count first."]
          if share("chunk_p") else []),
        *([f"- A share of the story examples ({args['event_p']}) has, in each count change with "
           "probability 1/2, the change and its noun masked and the counts before and after it shown (the state "
           "of a decoder that wrote the count first), the forced masks weighted 1."]
          if share("event_p") and "story" in event_tasks else []),
        *([f"- A share of the chain examples ({args['event_p']}) has, in each worked step with "
           "probability 1/2 (unless the step before it was forced), the step's result and its next use masked "
           "and the numbers it is computed from shown (the state of a decoder that must compute the step, not "
           "copy it), the forced masks weighted 1."]
          if share("event_p") and "arithmetic" in event_tasks else []),
        "",
        "## Training",
        "",
        "```",
        *info.get("commands", [info["command"]]),
        "```",
        "",
        f"- {info.get('minutes_before', 0) + info['minutes_trained']:.0f} minutes, "
        f"{info.get('steps_before', 0) + info['step']} optimiser steps in all"
        + (f" ({info['steps_before']} before the last command's `--init-from`)" if info.get("steps_before") else "")
        + f", on {info['machine']}"
        f" (torch {info['torch']}). AdamW, warmup then cosine decay (by steps or by `--max-minutes`,",
        "  whichever is further along). Seeded and resumable (`.train/state.pt`); the export is the",
        *([f"  exponential moving average of the weights (decay {args['ema']}) at the",
           "  checkpoint with the best held-out score relative to the bars, evaluated every",]
          if share("ema") else
          ["  checkpoint with the best held-out score relative to the bars, evaluated every"]),
        f"  {args.get('eval_every', '?')} steps on {args.get('eval_n', '?')} "
        "held-out problems per task.",
        "",
        f"## Held-out scores (step {info.get('steps_before', 0) + info['step']})",
        "",
        "Greedy baseline sampler at one token per step (low-confidence remasking, a single block),"
        f" {info['eval_n']} held-out problems per task:",
        "",
        "| task | metric | score |",
        "|---|---|---|",
    ]
    for name, scores in h.items():
        if name not in TASKS:
            continue
        for k, v in scores.items():
            if k in METRIC_NAMES and k != "sentences":
                lines.append(f"| {name} | {METRIC_NAMES[k]} | {v:.1%} |")
    if info.get("decoding"):
        lines += ["", info["decoding"].rstrip()]
    lines += ["", "## Samples (held out, same sampler)", ""]
    for name, samples in info["samples"].items():
        lines += [f"### {name}", ""]
        for s in samples:
            lines.append(f"- `{s['prompt']}` -> `{s['output']}`")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slowfast train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the exported model")
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
    for name, b in (("story", 32), ("arithmetic", 32), ("copy", 8)):
        p.add_argument(f"--batch-{name}", type=int, default=b, help=f"{name} examples per step")
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
    return p.parse_args(argv)


def log(msg: str, file=None) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if file is not None:
        with open(file, "a") as f:
            f.write(line + "\n")


def evaluate_export(args) -> int:
    """Score ``args.out`` as shipped (``load_model`` + its tokenizer) and refresh its card."""
    from .models.loading import load_model

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


def task_list(flag: str, value: str, allowed: Sequence[str]) -> set[str]:
    """The tasks a comma-separated ``flag`` names; one it may not name is refused."""
    tasks = {t for t in value.split(",") if t}
    unknown = sorted(tasks - set(allowed))
    if unknown:
        raise ValueError(f"{flag}: {', '.join(unknown)} not allowed; allowed: {', '.join(allowed)}")
    return tasks


class BadFlag(SystemExit):
    """A refused flag, as argparse refuses one: exit status 2 (its message is already on stderr)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = 2


MIN_VOCAB = 256 + len(SPECIALS)  # the byte-level alphabet and the special tokens
# flags that size the network: (our flag's dest, config.json's name)
SHAPE_FLAGS = (("d_model", "d_model"), ("n_layers", "n_layers"), ("n_heads", "n_heads"),
               ("mlp_hidden", "mlp_hidden_size"), ("max_seq_len", "max_sequence_length"))


def flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_args(args) -> tuple[set[str], set[str], torch.device]:
    """Every flag checked before anything is created or loaded; a bad one raises ValueError
    naming it. Returns the --suffix-tasks, the --event-tasks and the device."""
    from .bench import at_least, device_flag

    suffix_tasks = task_list("--suffix-tasks", args.suffix_tasks, SUFFIX_TASKS)
    event_tasks = task_list("--event-tasks", args.event_tasks, EVENT_TASKS)
    lows = {"steps": 1, "threads": 1, "eval_every": 1, "eval_n": 1, "d_model": 1, "n_layers": 1, "n_heads": 1,
            "mlp_hidden": 1, "max_seq_len": 1, "warmup": 0, **{f"batch_{name}": 0 for name in TASKS}}
    for dest, low in lows.items():
        at_least(getattr(args, dest), flag_name(dest), low)
    if not any(getattr(args, f"batch_{name}") for name in TASKS):
        raise ValueError(f"{', '.join(flag_name('batch_' + name) for name in TASKS)}: all 0 is not allowed; "
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
    for path, flag in ((args.out, "--out"), (args.work_dir, "--work-dir")):
        if path.exists() and not path.is_dir():
            raise ValueError(f"{flag}: {path} is a file; allowed: a folder (created when missing)")
    if args.evaluate:
        for name in ("config.json", "training_info.json"):
            if not (args.out / name).is_file():
                raise ValueError(f"--out: {args.out} has no {name}; allowed with --evaluate: a folder this "
                                 "script exported")
    return suffix_tasks, event_tasks, device


def check_init_from(args) -> None:
    """--init-from must be an exported folder whose network has the shape the flags ask for."""
    from .models.loading import ModelLoadError, read_raw_config

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


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    work: Path = args.work_dir
    tok_dir = work / "tokenizer"
    fresh_tok = None
    try:  # every check before anything is created: a refused flag leaves no trace
        suffix_tasks, event_tasks, device = check_args(args)
        if not args.evaluate:
            st = resume_state(args, device)
            resume = st is not None
            if args.init_from is not None and not resume:
                check_init_from(args)
            if not (resume and (tok_dir / "tokenizer.json").exists()) and args.init_from is None:
                t0 = time.time()
                fresh_tok = build_tokenizer(args.vocab_size, args.seed)
                check_canvases(fresh_tok, args)
                tok_seconds = time.time() - t0
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise BadFlag(str(exc)) from None
    torch.set_num_threads(args.threads)
    if args.evaluate:
        return evaluate_export(args)
    work.mkdir(parents=True, exist_ok=True)
    logfile = work / "train.log"
    state_path = work / "state.pt"
    command = "python -m slowfast train " + shlex.join(sys.argv[1:] if argv is None else argv)  # rerunnable as printed

    if fresh_tok is not None:
        fresh_tok.save_pretrained(str(tok_dir))
        tok = load_tokenizer(tok_dir)  # train on exactly what ships
        log(f"tokenizer: {len(tok)} tokens in {tok_seconds:.1f}s", logfile)
    elif resume and (tok_dir / "tokenizer.json").exists():
        tok = load_tokenizer(tok_dir)
    else:  # continue training a shipped model: its own tokenizer
        tok = load_tokenizer(args.init_from)
        tok.save_pretrained(str(tok_dir))
    check_tokenizer(tok)
    data = Data(tok)

    cfg = model_config(args, tok)
    torch.manual_seed(args.seed)
    net = Transformer(cfg)
    init_weights(net, args.seed)
    net.to(device)
    decay = [p for n, p in net.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in net.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    step, elapsed_before, best, history, commands = 0, 0.0, -1.0, [], []
    if resume:
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed_before, best, history = st["step"], st["elapsed"], st["best"], st["history"]
        commands = list(st.get("commands", []))
        log(f"resumed from {state_path} at step {step} ({elapsed_before / 60:.1f} min trained)", logfile)
    lineage = {"steps_before": 0, "minutes_before": 0.0}  # training of the --init-from model
    if resume:
        lineage = st.get("lineage", lineage)
    if args.init_from is not None and not resume:  # a resumed run continues its own weights
        from .models.loading import load_weights

        net.load_state_dict(load_weights(args.init_from, device, torch.float32))
        log(f"weights replaced by those of {args.init_from}", logfile)
        prior_path = args.init_from / "training_info.json"
        if not resume and prior_path.exists():  # the card keeps the whole history of the weights
            prior = json.loads(prior_path.read_text())
            commands = list(prior.get("commands", [prior.get("command", "?")])) + commands
            lineage = {"steps_before": prior.get("steps_before", 0) + prior.get("step", 0),
                       "minutes_before": prior.get("minutes_before", 0.0) + prior.get("minutes_trained", 0.0)}
    ema_net = None  # the averaged weights that are evaluated and exported (--ema)
    if args.ema:
        ema_net = Transformer(cfg).to(device)
        ema_net.load_state_dict(st["ema"] if resume and st.get("ema") else net.state_dict())
        ema_net.requires_grad_(False)
    shipped = ema_net if ema_net is not None else net  # what run_eval scores and exports
    log(f"model: {net.num_parameters() / 1e6:.2f}M parameters, config {json.dumps(cfg.to_dict())}", logfile)
    log(f"command: {command}", logfile)
    commands.append(f"{command}  # from step {step}")
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"CPU, torch.set_num_threads({args.threads})")

    def save_state() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "step": step,
                    "ema": ema_net.state_dict() if ema_net is not None else None,
                    "elapsed": elapsed_before + time.time() - t_start, "best": best,
                    "history": history, "commands": commands, "lineage": lineage,
                    "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
                    | {"work_dir": str(work)}}, tmp)
        os.replace(tmp, state_path)

    def run_eval() -> float:
        nonlocal best
        t0 = time.time()
        scores, samples = evaluate_all(shipped, data, args.eval_n)
        score = selection_score(scores)
        rec = {"step": step, "minutes": round((elapsed_before + time.time() - t_start) / 60, 2), **scores}
        # one forward on true held-out texts (see eval): a hidden count or change of a story,
        # a hidden step of a chain
        from .evaluate import count_inference, step_inference
        from .models.loading import DLLM

        probe = DLLM("training", shipped, tok, data.mask, frozenset({data.eos}))
        if "story" in TASKS:
            rec["count_inference"] = count_inference(probe, TASKS["story"], args.eval_n)
        if "arithmetic" in TASKS:
            rec["step_inference"] = step_inference(probe, TASKS["arithmetic"], args.eval_n)
        history.append(rec)
        log(f"eval step {step}: " + " | ".join(
            f"{name} {TASKS[name].primary_metric} {s[TASKS[name].primary_metric]:.3f}" for name, s in scores.items())
            + f" | score {score:.3f} ({time.time() - t0:.0f}s)"
            + ("; story count inference forward {forward:.3f} backward {backward:.3f}".format(**rec["count_inference"])
               if "count_inference" in rec else "")
            + ("; chain step computed {computed:.3f}".format(**rec["step_inference"])
               if "step_inference" in rec else ""), logfile)
        for name, s in samples.items():
            log(f"  {s[0]['prompt']!r} -> {s[0]['output']!r}", logfile)
        if score > best and not args.no_export:
            best = score
            info = {"command": command, "commands": commands, "step": step, "minutes_trained": rec["minutes"],
                    **lineage,
                    "machine": machine, "torch": torch.__version__,
                    "parameters": net.num_parameters(), "config": cfg.to_dict(), "heldout": rec,
                    "eval_n": args.eval_n, "samples": {name: s[:5] for name, s in samples.items()},
                    "args": {k: str(v) for k, v in vars(args).items()}}
            export(shipped, tok, args.out, info)
            log(f"  exported to {args.out} (best so far)", logfile)
        return score

    net.train()
    t_start = time.time()
    last_ckpt = time.time()
    tasks_b = [(name, getattr(args, f"batch_{name}")) for name in TASKS]
    running: dict[str, float] = {}
    t_log = time.time()
    while step < args.steps:
        if args.max_minutes and (elapsed_before + time.time() - t_start) / 60 >= args.max_minutes:
            log(f"time limit of {args.max_minutes} min reached at step {step}", logfile)
            break
        rng = random.Random(args.seed * 1_000_003 + step)
        gen = torch.Generator().manual_seed(args.seed * 7_919 + step)
        lr = lr_at(step, args, (elapsed_before + time.time() - t_start) / 60)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        losses = {}
        for name, b in tasks_b:
            if b <= 0:
                continue
            tokens, plen = data.training_batch(name, rng, b)
            story = name == "story"
            loss = masked_diffusion_loss(net, tokens.to(device), plen, data.mask, gen,
                                         args.suffix_p if name in suffix_tasks else 0.0,
                                         args.chunk_p if story else 0.0,
                                         args.event_p if name in event_tasks else 0.0,
                                         data.events(name, tokens, plen) if name in event_tasks and args.event_p
                                         else None)
            loss.backward()
            losses[name] = loss.item()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if ema_net is not None:
            ema_update(ema_net, net, args.ema)
        step += 1
        for k, v in losses.items():
            running[k] = 0.98 * running.get(k, v) + 0.02 * v
        if step % 50 == 0 or step == 1:
            el = elapsed_before + time.time() - t_start
            log(f"step {step}/{args.steps} lr {lr:.2e} loss " + " ".join(f"{k} {v:.3f}" for k, v in running.items())
                + f" | {(time.time() - t_log) / (50 if step > 1 else 1):.2f}s/step, {el / 60:.1f} min", logfile)
            t_log = time.time()
        if step % args.eval_every == 0:
            run_eval()
            save_state()
            last_ckpt = time.time()
        elif time.time() - last_ckpt > args.ckpt_minutes * 60:
            save_state()
            last_ckpt = time.time()
    if step == 0:  # stopped before training anything (--max-minutes): an untrained model is never exported
        log("stopped before the first step: nothing evaluated or exported", logfile)
    elif not history or history[-1]["step"] != step:
        run_eval()
    save_state()
    log(f"done at step {step}; best score {best:.3f}", logfile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
