"""The training data and objective: task examples as equal-length token batches on the engine's
canvas, and LLaDA's masked-diffusion loss with the masks ``draw_masks`` draws."""
from __future__ import annotations

import random
from typing import Optional

import torch
import torch.nn.functional as F

from ...models.transformer import Transformer
from ...tasks import Example, Task
from ...tasks.arithmetic import step_events
from ...tasks.chat import CHAT_TEMPLATE, chat_tasks
from ...tasks.registry import task_set
from ...tasks.story import count_events
from .tokenizer import EOS, MASK

EPS = 1e-3  # LLaDA's eps: p_mask = (1 - eps) * t + eps
# canvas lengths drawn per batch (each task's own gen_length is among them)
GEN_LENGTHS = {"story": (48, 64, 80, 96, 112, 128), "arithmetic": (104, 112, 120), "copy": (16, 24)}
CHAT_RAW_SHARE = 0.25  # share of the chat problems trained with the base task's prompt as the user's message
TRAIN_SET = "v3"  # the task set training draws from (tasks.registry.CHAIN_OPS): chains of 1 to 10 operations
TASKS: dict[str, Task] = task_set(TRAIN_SET)
# what training draws from: the tasks, and the same tasks asked in the chat template
TRAIN_TASKS: dict[str, Task] = {**TASKS, **chat_tasks(CHAT_RAW_SHARE, TRAIN_SET)}
for _name, _task in list(TRAIN_TASKS.items()):
    if getattr(_task, "chat", False):
        GEN_LENGTHS[_name] = GEN_LENGTHS[_task.base.name]


def batch_dest(name: str) -> str:
    """The flag destination of a training task's batch size (``chat-story`` -> ``batch_chat_story``)."""
    return "batch_" + name.replace("-", "_")


def base_name(name: str) -> str:
    """The task a training task's examples are (``chat-story`` -> ``story``)."""
    task = TRAIN_TASKS[name]
    return task.base.name if getattr(task, "chat", False) else name
TRUNCATE_P = 0.25  # share of batches cut short on the right, as SlowFast's fast forwards are
CHUNK = (2, 6)  # run lengths of --chunk-p masking
SUFFIX_TASKS = ("story", "arithmetic")  # the chains that --suffix-p may apply to (--suffix-tasks)
EVENT_TASKS = ("story", "arithmetic")  # the tasks with forced events that --event-p may apply to
Forced = tuple[tuple[int, ...], tuple[int, ...]]  # an event: response positions to hide, to show


class Data:
    """Turns task examples into equal-length token batches (one task, one prompt length)."""

    def __init__(self, tok):
        self.tok = tok
        self.eos = tok.convert_tokens_to_ids(EOS)
        self.mask = tok.convert_tokens_to_ids(MASK)
        self.strings = [tok.decode([i]) for i in range(len(tok))]  # each id's text, for count_events

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text)["input_ids"])

    def prompt_ids(self, task: Task, ex: Example) -> list[int]:
        """The prompt's ids as the engine feeds them: a chat task's as one user turn in the
        chat template (``DLLM.encode_chat``), any other as plain text."""
        if not getattr(task, "chat", False):
            return self.encode(ex.prompt)
        if getattr(self.tok, "chat_template", None) != CHAT_TEMPLATE:
            raise ValueError("the tokenizer has no (or another) chat template; chat tasks need tasks.chat's")
        text = self.tok.apply_chat_template([{"role": "user", "content": ex.prompt}], add_generation_prompt=True,
                                           tokenize=False)
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def count_events(self, tokens: torch.Tensor, prompt_len: int) -> list[list[tuple[int, int, int]]]:
        """Per row, the (change, noun, new count) response positions of its story's count changes."""
        return [count_events([self.strings[i] for i in row]) for row in tokens[:, prompt_len:].tolist()]

    def events(self, name: str, tokens: torch.Tensor, prompt_len: int) -> list[list[Forced]]:
        """Per row, the forced events of task ``name`` (see ``draw_masks``): a story's count
        changes (``story_forced``), a chain's worked steps (``tasks.arithmetic.step_events``)."""
        name = base_name(name) if name in TRAIN_TASKS else name
        if name == "story":
            return [story_forced(row) for row in self.count_events(tokens, prompt_len)]
        if name == "arithmetic":
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
        plen = len(self.prompt_ids(task, first))
        exs = [first]
        while len(exs) < batch:
            ex = task.draw(rng, split)
            if len(self.prompt_ids(task, ex)) == plen:
                exs.append(ex)
        rows = [self.prompt_ids(task, ex) + self.response_ids(ex, gen_length, task.fills_canvas) for ex in exs]
        return torch.tensor(rows, dtype=torch.long), plen, exs

    def training_batch(self, name: str, rng: random.Random, batch: int):
        """A training batch of task ``name``: a random canvas length, sometimes cut on the right."""
        gen_length = rng.choice(GEN_LENGTHS.get(name, (TRAIN_TASKS[name].gen_length,)))
        tokens, plen, _ = self.task_batch(TRAIN_TASKS[name], rng, batch, "train", gen_length)
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
            force_events(masked[b], p_tok[b], events[b], L, gen)
    return masked, p_tok


def force_events(masked: torch.Tensor, p_tok: torch.Tensor, events: list[Forced], L: int,
                 gen: torch.Generator) -> None:
    """One example's events, each forced with probability 1/2 (in place): its positions to hide
    masked and weighted 1, those to show unmasked; an event cut by the canvas, or one that would
    undo an earlier forced one, is left alone."""
    hid: set[int] = set()
    showed: set[int] = set()
    for hide, show in events:
        if max(hide + show) >= L or not torch.rand(1, generator=gen).item() < 0.5:
            continue
        if hid.intersection(show) or showed.intersection(hide):
            continue
        masked[list(hide)] = True
        p_tok[list(hide)] = 1.0
        masked[list(show)] = False
        p_tok[list(show)] = 1.0  # (never masked here: their weight is unused)
        hid.update(hide)
        showed.update(show)


