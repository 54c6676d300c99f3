"""The verdict a run view shows at the end of a run on a task prompt: right or wrong by the
task's own scorer, why, and where in the output its checker found it going wrong."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .chat import example_or_question


@dataclass(frozen=True)
class Verdict:
    """``task``: the task's name; ``correct``: ``Task.correct`` on the output; ``metric``: the
    task's primary metric (what ``correct`` reads); ``reason``: one short sentence (``the
    answer is 17, expected 11: operation 3 reads '09+8=18', expected '09+8=17'``); ``where``: the
    character offset in the output where the checker found it going wrong (the first wrong
    step, letter or word), None when it is right."""

    task: str
    correct: bool
    metric: str
    reason: str
    where: Optional[int] = None


def verdict(prompt: str, text: str) -> Optional[Verdict]:
    """The verdict on ``text``, a run's output for ``prompt``; None when ``prompt`` is in no
    task's format or asked as its chat question (see ``chat.example_or_question``)."""
    found = example_or_question(prompt or "")
    if found is None:
        return None
    task, example = found
    diagnosis = task.diagnose(example, text)
    correct = task.correct(example, text)
    return Verdict(task=task.name, correct=correct, metric=task.primary_metric, reason=diagnosis.reason,
                   where=None if correct else diagnosis.where)
