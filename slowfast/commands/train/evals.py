"""Held-out scores during training: each task's held-out prompts decoded by the engine's baseline
at one token per forward (low-confidence remasking, a single block), scored by the task."""
from __future__ import annotations

from ...engine import GenerationSettings, Run, drain
from ...models.dllm import DLLM
from ...models.transformer import Transformer
from ...tasks import TASKS, Task
from .data import Data

BARS = {"story": 0.90, "arithmetic": 0.95, "copy": 0.99}  # held-out accuracy bars (issue 14)


def probe_model(net: Transformer, data: Data) -> DLLM:
    """The network being trained as the engine's model (its tokenizer, mask and end-of-text)."""
    return DLLM("training", net, data.tok, data.mask, frozenset({data.eos}))


def evaluate_task(net: Transformer, data: Data, task: Task, n: int, seed: int = 0):
    """Held-out scores of ``task``: each prompt decoded by the engine's baseline at one token per
    forward in one block (``Run``), scored by the task (``Task.correct`` for its primary metric);
    returns (mean metrics, samples)."""
    exs = task.examples("heldout", n, seed)
    settings = GenerationSettings(sampler="baseline", gen_length=task.gen_length, block_length=task.gen_length,
                                  steps=task.gen_length, chat=False)
    model = probe_model(net, data)
    totals: dict[str, float] = {}
    samples = []
    net.eval()
    for ex in exs:
        text = drain(Run(model, ex.prompt, settings)).text
        sc = {**task.score(ex, text), task.primary_metric: task.correct(ex, text)}
        for k, v in sc.items():
            if isinstance(v, (bool, int, float)):
                totals[k] = totals.get(k, 0.0) + float(v)
        samples.append({"prompt": ex.prompt, "output": text, "target": ex.target, **sc})
    net.train()
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
