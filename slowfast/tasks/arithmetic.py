"""Chained single-digit addition/subtraction with worked steps, longer than one pass.

Prompt ``Q: 7+5-3+8-6=? A:``, answer `` 7+5=12, 12-3=09, 09+8=17, 17-6=11. The answer is 11.``
Each step reuses the previous result, so a later result becomes certain only once the
steps before it are written or computed: a chain longer than a small model computes in one
forward, as GSM8K's are for LLaDA (the embedded model's card measures how far it gets).

Operands are 1..9, a chain has ``min_ops`` to ``max_ops`` operations (the shipped model's
task set, ``registry.CHAIN_OPS``, says which: 4 to 6 for the model trained so far; 1 to 10 for
the next one, since a one-operation sum is the first thing a newcomer types and seven or more
are long enough that SlowFast's first slow stage ends before the chain is done), and every
intermediate result lies in 0..29 (the first operation may be a subtraction). Results are
written with two digits
(``09``), so the layout (where each number, sign and comma goes, where the answer ends) is
fixed by the number of operations in the prompt and does not shift with the values: a
decoder that commits the layout early cannot misplace what follows. Digits are single
tokens. The answer is followed by end-of-text to the end of the canvas.
"""
from __future__ import annotations

import random
import re

from .base import Diagnosis, Example, Task

ANSWER_RE = re.compile(r"The answer is (-?\d+)")
PROMPT_RE = re.compile(r"^Q: (\d+)((?:[+-]\d+)+)=\? A:$")
TERM_RE = re.compile(r"([+-])(\d+)")
STEP_RE = re.compile(r"(\d+)[+-](\d+)=(\d+)")
NEXT_USE_RE = re.compile(r"(?:, |\. The answer is )(\d+)(?=\D)")  # where a step's result is used next


class Arithmetic(Task):
    name = "arithmetic"
    gen_length = 64  # the longest answer of six steps (two-digit results) is 53 tokens, then EOS
    primary_metric = "answer_correct"

    def __init__(self, min_ops: int = 4, max_ops: int = 6, max_operand: int = 9,
                 min_result: int = 0, max_result: int = 29):
        if not 1 <= min_ops <= max_ops:
            raise ValueError(f"operations: {min_ops}..{max_ops} is not allowed; allowed: 1 <= min_ops <= max_ops")
        self.min_ops, self.max_ops = min_ops, max_ops
        self.gen_length = canvas_for(max_ops)
        self.max_operand = max_operand
        if not 0 <= min_result <= max_result <= 99:
            raise ValueError(f"results must lie in 0..99 (two digits), got {min_result}..{max_result}")
        self.min_result = min_result
        self.max_result = max_result

    def sample(self, rng: random.Random) -> Example:
        n_ops = rng.randint(self.min_ops, self.max_ops)
        value = rng.randint(1, self.max_operand)
        operands, ops = [value], []
        for _ in range(n_ops):
            choices = [(op, b) for op in "+-" for b in range(1, self.max_operand + 1)
                       if self.min_result <= (value + b if op == "+" else value - b) <= self.max_result]
            op, b = rng.choice(choices)
            new = value + b if op == "+" else value - b
            ops.append(op)
            operands.append(b)
            value = new
        expr = str(operands[0]) + "".join(f"{op}{b}" for op, b in zip(ops, operands[1:]))
        return worked(f"Q: {expr}=? A:", operands, ops)

    def parse(self, prompt: str) -> Example | None:
        m = PROMPT_RE.match(prompt.strip())
        if m is None:
            return None
        terms = TERM_RE.findall(m.group(2))
        return worked(prompt.strip(), [int(m.group(1))] + [int(b) for _, b in terms], [op for op, _ in terms])

    def score(self, example: Example, output_text: str) -> dict[str, float | bool]:
        found = ANSWER_RE.findall(output_text)
        answer_correct = bool(found) and int(found[-1]) == int(example.meta["answer"])
        return {"answer_correct": answer_correct, "exact_match": output_text.strip() == example.target.strip()}

    def diagnose(self, example: Example, output_text: str) -> Diagnosis:
        """The answer read as ``score`` reads it (the last ``The answer is N``) against the
        expected one; when it is wrong, ``where`` is the first character at which the output
        departs from the worked steps (the layout is fixed, so that is the first wrong step,
        or the answer itself when the steps are right) and the reason names that clause."""
        found = ANSWER_RE.findall(output_text)
        expected = written(example.meta["answer"])
        if self.correct(example, output_text):
            return Diagnosis(True, f"the answer is {found[-1]}, as expected")
        said = (f"the answer is {found[-1]}, expected {expected}" if found
                else f"there is no final answer ('The answer is ...'), expected {expected}")
        got, want = clauses(output_text), clauses(example.target)
        for i, (start, text) in enumerate(got):
            if i >= len(want):
                return Diagnosis(False, f"{said}: '{text}' follows the answer", start)
            if text != want[i][1]:
                raw = CLAUSE_RE.match(output_text, start).group(0)  # with its trailing spaces
                where = start + next((k for k, (x, y) in enumerate(zip(raw, want[i][1])) if x != y),
                                     min(len(raw), len(want[i][1])))
                if want[i][1].startswith("The answer") and text.startswith("The answer"):
                    return Diagnosis(False, f"{said}; the working before it is right", where)
                return Diagnosis(False, f"{said}: operation {i + 1} reads '{text}', expected '{want[i][1]}'"
                                 if i + 1 < len(want) else f"{said}: '{text}' is where the answer should be", where)
        end = len(output_text.rstrip())
        if not got:
            return Diagnosis(False, f"{said}: the output is empty", end)
        return Diagnosis(False, f"{said}: the output stops after '{got[-1][1]}'", end)


def canvas_for(max_ops: int) -> int:
    """The generation length that holds the longest chain of ``max_ops`` operations and an
    end-of-text, in multiples of 8: at most 9 tokens a step (``09+8=17, ``) and 7 for
    `` The answer is 17.``; 64 for 6 operations (53 tokens), 104 for 10 (96 tokens)."""
    return -(-(9 * max_ops + 8) // 8) * 8


CLAUSE_RE = re.compile(r"[^,.\s][^,.]*")


def clauses(text: str) -> list[tuple[int, str]]:
    """The clauses of a worked answer (``12-3=09``, ``The answer is 11``) with their offsets:
    what lies between commas and full stops, stripped. Comparing clause by clause against the
    worked steps finds the first wrong one whatever the punctuation between them."""
    return [(m.start(), m.group(0).rstrip()) for m in CLAUSE_RE.finditer(text)]


def written(n: int) -> str:
    """A result as the chain writes it: two digits (``09``)."""
    return f"{int(n):02d}"


def worked(prompt: str, operands: list[int], ops: list[str]) -> Example:
    """The example for a chain: its worked steps left to right and the answer."""
    value, steps = operands[0], []
    for i, (op, b) in enumerate(zip(ops, operands[1:])):
        new = value + b if op == "+" else value - b
        first = str(value) if i == 0 else written(value)  # the first operand is the prompt's digit
        steps.append(f"{first}{op}{b}={written(new)}")
        value = new
    target = " " + ", ".join(steps) + f". The answer is {written(value)}."
    return Example(prompt=prompt, target=target, meta={"answer": value, "operands": operands, "ops": ops})


def step_events(strings: list[str]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """For each worked step in a response's tokens ``strings`` (``7+5=12, 12-3=9, ...``): the
    token positions of its result and of that result's next use (the next step's first
    number, or the final answer), then those of the numbers and sign it is computed from
    (``7+5=``). Hiding the first and showing the second is the state a decoder is in when it
    must compute a step rather than copy its result. Steps whose next use the canvas cuts
    are left out."""
    text, owner = "", []
    for i, s in enumerate(strings):
        text += s
        owner += [i] * len(s)

    def positions(start: int, end: int) -> tuple[int, ...]:
        return tuple(sorted({owner[c] for c in range(start, end)}))

    out = []
    for m in STEP_RE.finditer(text):
        use = NEXT_USE_RE.match(text, m.end())
        if use is None or use.group(1) != m.group(3):
            continue  # cut by the canvas (a number is whole only once a non-digit follows it)
        hide = positions(*m.span(3)) + positions(*use.span(1))
        out.append((hide, positions(m.start(1), m.start(3))))
    return out
