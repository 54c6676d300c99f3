"""Chained single-digit addition/subtraction with worked steps.

Prompt ``Q: 7+5-3+8=? A:``, answer `` 7+5=12, 12-3=9, 9+8=17. The answer is 17.``
(that one is out of range here: see below). Each step reuses the previous result.

Operands are 1..9, every chain has exactly three operations, and every intermediate
result has two digits and stays in the teens (10..19; so the first operation is always an
addition, with a carry). With digit tokens every prompt then has 13 tokens and every
answer exactly 33, laid out the same way: each copied number sits at a fixed distance
from its source, and each result digit is a function of the digits at fixed places.
That is what makes the task learnable by a 2M-parameter model in about an hour of CPU:
with one- or two-digit results the layout shifts from problem to problem (the same model
stayed below 20% in a trial), and with results up to 36 it knew only ~76% of the step
facts after 40 minutes. 3,645 problems in all, 370 of them held out.
"""
from __future__ import annotations

import random
import re

from .base import Example, Task

ANSWER_RE = re.compile(r"The answer is (-?\d+)")


class Arithmetic(Task):
    name = "arithmetic"
    gen_length = 40  # every answer is 33 tokens (digit tokens), then EOS
    primary_metric = "answer_correct"

    def __init__(self, n_ops: int = 3, max_operand: int = 9, min_result: int = 10, max_result: int = 19):
        self.n_ops = n_ops
        self.max_operand = max_operand
        self.min_result = min_result
        self.max_result = max_result

    def sample(self, rng: random.Random) -> Example:
        value = rng.randint(1, self.max_operand)
        operands, ops, steps = [value], [], []
        for _ in range(self.n_ops):
            choices = [(op, b) for op in "+-" for b in range(1, self.max_operand + 1)
                       if self.min_result <= (value + b if op == "+" else value - b) <= self.max_result]
            op, b = rng.choice(choices)
            new = value + b if op == "+" else value - b
            steps.append(f"{value}{op}{b}={new}")
            ops.append(op)
            operands.append(b)
            value = new
        expr = str(operands[0]) + "".join(f"{op}{b}" for op, b in zip(ops, operands[1:]))
        prompt = f"Q: {expr}=? A:"
        target = " " + ", ".join(steps) + f". The answer is {value}."
        return Example(prompt=prompt, target=target, meta={"answer": value, "operands": operands, "ops": ops})

    def score(self, example: Example, output_text: str) -> dict[str, float | bool]:
        found = ANSWER_RE.findall(output_text)
        answer_correct = bool(found) and int(found[-1]) == int(example.meta["answer"])
        return {"answer_correct": answer_correct, "exact_match": output_text.strip() == example.target.strip()}
