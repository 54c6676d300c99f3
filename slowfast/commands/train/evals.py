"""Held-out scores during training: each task's held-out prompts decoded by the engine's baseline
at one token per forward (low-confidence remasking, a single block), scored by the task."""
from __future__ import annotations

from ...engine import GenerationSettings, Run, drain
from ...models.dllm import DLLM
from ...models.transformer import Transformer
from ...tasks import Task
from ...tasks.chat import chat_tasks
from .data import TASKS, TRAIN_SET, Data

# held-out accuracy bars (issue 14; the chat forms' from issue 27)
BARS = {"story": 0.90, "arithmetic": 0.95, "copy": 0.99, "chat-story": 0.85, "chat-arithmetic": 0.90,
        "chat-copy": 0.99}
# what training scores: the training set's tasks and their chat forms (every prompt a question)
EVAL_TASKS: dict[str, Task] = {**TASKS, **chat_tasks(0.0, TRAIN_SET)}


def probe_model(net: Transformer, data: Data) -> DLLM:
    """The network being trained as the engine's model (its tokenizer, mask and end-of-text)."""
    return DLLM("training", net, data.tok, data.mask, frozenset({data.eos}))


def evaluate_task(net: Transformer, data: Data, task: Task, n: int, seed: int = 0):
    """Held-out scores of ``task``: each prompt decoded by the engine's baseline at one token per
    forward in one block (``Run``), scored by the task (``Task.correct`` for its primary metric);
    returns (mean metrics, samples)."""
    exs = task.examples("heldout", n, seed)
    settings = GenerationSettings(sampler="baseline", gen_length=task.gen_length, block_length=task.gen_length,
                                  steps=task.gen_length, chat=bool(getattr(task, "chat", False)))
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
    means = {k: v / len(exs) for k, v in totals.items()}
    by_ops = per_operation_count(samples, exs, task.primary_metric)
    if by_ops:
        means["by_ops"] = by_ops
    return means, samples


def per_operation_count(samples: list[dict], exs, metric: str) -> dict[str, list]:
    """A chain task's accuracy per number of operations: {count: [share right, runs]} (empty
    for tasks whose examples are not chains)."""
    counts: dict[int, list[float]] = {}
    for sample, ex in zip(samples, exs):
        if "ops" in ex.meta:
            counts.setdefault(len(ex.meta["ops"]), []).append(float(sample[metric]))
    return {str(k): [sum(v) / len(v), len(v)] for k, v in sorted(counts.items())}


def evaluate_all(net: Transformer, data: Data, n: int, names=None) -> tuple[dict, dict]:
    """Held-out metrics and samples of every task (``names``: those of ``EVAL_TASKS`` to score;
    the chat forms only when the tokenizer has a chat template)."""
    if names is None:
        names = [k for k in EVAL_TASKS if k in TASKS or getattr(data.tok, "chat_template", None)]
    scores, samples = {}, {}
    for name in names:
        scores[name], samples[name] = evaluate_task(net, data, EVAL_TASKS[name], n)
    return scores, samples


def task_accuracy(name: str, score: dict) -> float:
    """A task's held-out accuracy for selection: a chain's is the mean over its operation counts
    (each count weighs the same however many of the prompts have it)."""
    by_ops = score.get("by_ops")
    if by_ops:
        return sum(acc for acc, _ in by_ops.values()) / len(by_ops)
    return score[EVAL_TASKS[name].primary_metric]


def selection_score(scores: dict) -> float:
    """The mean over the scored tasks of each one's accuracy relative to its bar (capped at 1): a
    task short of its bar costs what it lacks, so one noisy task at small n does not decide alone."""
    parts = [min(1.0, task_accuracy(name, scores[name]) / BARS[name]) for name in scores if name in BARS]
    return sum(parts) / max(len(parts), 1)
