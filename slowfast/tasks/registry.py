"""The task sets by name, and the task a typed prompt belongs to."""
from __future__ import annotations

from typing import Optional

from .arithmetic import Arithmetic
from .base import Example, Task
from .copy_letters import Copy
from .story import Story

# the chain's operations per task set: "v3" is what the shipped embedded model is trained and
# measured on (issue 27: a one-operation sum, chains long enough for a fast stage), "v2" what the
# previous model was (its figures can be rerun); both share the held-out split (the hash of the prompt)
CHAIN_OPS = {"v2": (4, 6), "v3": (1, 10)}
SHIPPED_SET = "v3"  # the task set of the shipped model: TASKS


def task_set(version: str) -> dict[str, Task]:
    """The tasks of a task set by name (story, arithmetic, copy)."""
    if version not in CHAIN_OPS:
        raise ValueError(f"task set: {version!r} is not known; allowed: {', '.join(CHAIN_OPS)}")
    return {t.name: t for t in (Story(), Arithmetic(*CHAIN_OPS[version]), Copy())}


TASKS: dict[str, Task] = task_set(SHIPPED_SET)


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
