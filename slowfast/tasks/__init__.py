"""Checkable prompt sets for the embedded model: seeded generators, a fixed held-out split
that training never sees, and a scorer per task.

``TASKS[name].examples(split, n, seed)`` gives ``Example(prompt, target, meta)``;
``TASKS[name].score(example, output_text)`` gives a dict whose ``primary_metric`` key is
what the acceptance bar is measured on. ``gen_length`` is the generation length to use.
``verdict(prompt, text)`` is the scorer's verdict on a run for a prompt in a task's format,
with the reason and where in the output its checker found it going wrong (``Task.diagnose``).
"""
from __future__ import annotations

from typing import Optional

from .arithmetic import Arithmetic
from .base import SPLITS, Diagnosis, Example, Task, is_heldout
from .copy_letters import Copy
from .story import Story

TASKS: dict[str, Task] = {t.name: t for t in (Story(), Arithmetic(), Copy())}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task: {name!r} is not known; allowed: {', '.join(TASKS)}")
    return TASKS[name]


def heldout_prompts(task_name: str, n: int, seed: int = 0) -> list[str]:
    """The first ``n`` held-out prompts of a task (fixed for a seed)."""
    return [ex.prompt for ex in get_task(task_name).examples("heldout", n, seed)]


def example_for(prompt: str) -> Optional[tuple[Task, Example]]:
    """The task and example ``prompt`` belongs to (any split, or typed by hand in a task's
    format), so a run on it can be scored; None for any other prompt."""
    for task in TASKS.values():
        example = task.parse(prompt)
        if example is not None:
            return task, example
    return None


from .verdict import Verdict, verdict  # noqa: E402 (it reads example_for)

__all__ = ["SPLITS", "TASKS", "Diagnosis", "Example", "Task", "Verdict", "example_for", "get_task",
           "heldout_prompts", "is_heldout", "verdict"]
