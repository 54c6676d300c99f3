"""Checkable prompt sets for benchmarks and sweeps: a task's held-out split or a JSONL file.

``problem_set("story", count)`` is the first ``count`` held-out prompts of an embedded-model
task, scored by the task's own scorer (its ``primary_metric``) as ``python -m slowfast eval``
scores it (no chat template). ``problem_set(jsonl="file.jsonl")`` reads ``{"prompt",
"answer"}`` objects, one per line, for any model: a run is right when its text (the decoded
answer cut at the first end-of-text, special tokens dropped) equals the answer after
stripping surrounding whitespace; the chat template is applied when the tokenizer has one.

``run_problem`` decodes one prompt with one setting through the engine and returns the row
the benchmark and the sweep aggregate.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .engine import Run, drain
from .params import DEFAULTS
from .tasks import get_task


@dataclass(frozen=True)
class Problem:
    index: int  # place in the set: rows gathered from several ranks are put back in this order
    prompt: str
    answer: str
    example: Any = None  # the task's Example, for its scorer


@dataclass
class ProblemSet:
    name: str
    gen_length: int
    metric: str
    problems: list[Problem]
    chat: bool = False
    scorer: Optional[Callable[[Problem, str], float]] = field(default=None, repr=False)
    source: str = "task"  # "task" (held-out split) or "jsonl"

    def score(self, problem: Problem, text: str) -> float:
        if self.scorer is not None:
            return self.scorer(problem, text)
        return float(text.strip() == problem.answer.strip())

    def describe(self) -> str:
        where = "held-out prompts" if self.source == "task" else "prompts from the JSONL file"
        return f"{self.name}: {len(self.problems)} {where}, metric {self.metric}"


def read_jsonl(path: str | Path, count: Optional[int] = None) -> list[Problem]:
    """``{"prompt", "answer"}`` per line (blank lines skipped); the first ``count`` when given."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--jsonl: {path} is not a file")
    out: list[Problem] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--jsonl: {path} line {n} is not JSON ({exc.msg})") from None
        if (not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip()
                or not isinstance(obj.get("answer"), str)):
            raise ValueError(f"--jsonl: {path} line {n}: allowed: an object with a non-empty string \"prompt\" "
                             "and a string \"answer\"")
        out.append(Problem(index=len(out), prompt=obj["prompt"], answer=obj["answer"]))
        if count is not None and len(out) >= count:
            break
    if not out:
        raise ValueError(f"--jsonl: {path} holds no prompts")
    return out


def problem_set(task: Optional[str] = None, count: Optional[int] = 8, *, jsonl: Optional[str | Path] = None,
                gen_length: Optional[int] = None, chat: Optional[bool] = None, seed: int = 0) -> ProblemSet:
    """A task's first ``count`` held-out prompts, or the first ``count`` lines of a JSONL file."""
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"count: {count!r} is not allowed; it must be an integer >= 1")
    if gen_length is not None and (isinstance(gen_length, bool) or not isinstance(gen_length, int) or gen_length < 1):
        raise ValueError(f"--gen-length: {gen_length!r} is not allowed; it must be an integer >= 1 "
                         "(omit it for the default)")
    if jsonl is not None:
        problems = read_jsonl(jsonl, count)
        return ProblemSet(name=Path(jsonl).stem, gen_length=gen_length or DEFAULTS["gen_length"],
                          metric="exact_match", problems=problems, chat=True if chat is None else chat,
                          source="jsonl")
    t = get_task(task or "story")
    examples = t.examples("heldout", count or 8, seed)
    problems = [Problem(index=i, prompt=ex.prompt, answer=ex.target, example=ex) for i, ex in enumerate(examples)]

    def scorer(problem: Problem, text: str) -> float:
        return float(t.correct(problem.example, text))

    return ProblemSet(name=t.name, gen_length=gen_length or t.gen_length, metric=t.primary_metric,
                      problems=problems, chat=bool(chat), scorer=scorer, source="task")


def run_problem(model, problems: ProblemSet, problem: Problem, settings,
                hold: Optional[Callable[[Run], bool]] = None) -> Optional[dict[str, Any]]:
    """Decode one prompt with ``settings`` (a GenerationSettings); a run the engine had to end
    (its forward or cycle cap) counts with what it decoded and ``stalled`` set. ``hold(run)`` is
    told each run before it decodes (the app's Stop holds it, to stop it after its current
    forward); None when ``hold`` refused the run or the run was stopped: there is no score."""
    run = Run(model, problem.prompt, settings)
    if hold is not None and not hold(run):
        return None
    trace = drain(run)
    if run.stopped:
        return None
    s = trace.stats
    return {"index": problem.index, "nfe": int(s.nfe), "forwards": int(s.forwards),
            "tokens_fed": int(s.tokens_fed), "seconds": float(s.seconds), "text": trace.text,
            "score": problems.score(problem, trace.text), "stalled": s.error is not None}
