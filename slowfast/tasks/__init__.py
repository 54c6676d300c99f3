"""Checkable prompt sets for the embedded model: seeded generators, a fixed held-out split
that training never sees, and a scorer per task.

``TASKS[name].examples(split, n, seed)`` gives ``Example(prompt, target, meta)``;
``TASKS[name].score(example, output_text)`` gives a dict whose ``primary_metric`` key is
what the acceptance bar is measured on. ``gen_length`` is the generation length to use.
``verdict(prompt, text)`` is the scorer's verdict on a run for a prompt in a task's format,
with the reason and where in the output its checker found it going wrong (``Task.diagnose``).
"""
from __future__ import annotations

from .base import SPLITS, Diagnosis, Example, Task, is_heldout
from .registry import TASKS, example_for, get_task, heldout_prompts
from .verdict import Verdict, verdict

__all__ = ["SPLITS", "TASKS", "Diagnosis", "Example", "Task", "Verdict", "example_for", "get_task",
           "heldout_prompts", "is_heldout", "verdict"]
