"""Copy a list of eight letters: the parallel-friendly task.

Prompt ``Copy: c f a k e q x z. A:``, answer `` c f a k e q x z.`` Every list has the same
length, so each output position reads one prompt position at a fixed distance: all output
positions are independent given the prompt and a model can be sure of them all at once,
which is what parallel (threshold, SlowFast) decoding exploits. (A variable-length reverse
task was tried first: with RoPE only relative positions are visible, and a 2M-parameter
model did not learn the alignment in the CPU budget.)
"""
from __future__ import annotations

import random
import re
import string

from .base import Example, Task

PROMPT_RE = re.compile(r"^Copy: ([a-z](?: [a-z])*)\. A:$")


class Copy(Task):
    name = "copy"
    gen_length = 16  # eight letters and a full stop, then EOS
    primary_metric = "exact_match"

    def __init__(self, length: int = 8):
        self.length = length

    def sample(self, rng: random.Random) -> Example:
        letters = [rng.choice(string.ascii_lowercase) for _ in range(self.length)]
        prompt = "Copy: " + " ".join(letters) + ". A:"
        target = " " + " ".join(letters) + "."
        return Example(prompt=prompt, target=target, meta={"letters": letters})

    def parse(self, prompt: str) -> Example | None:
        m = PROMPT_RE.match(prompt.strip())
        if m is None:
            return None
        letters = m.group(1).split(" ")
        return Example(prompt=prompt.strip(), target=" " + " ".join(letters) + ".", meta={"letters": letters})

    def score(self, example: Example, output_text: str) -> dict[str, float | bool]:
        return {"exact_match": output_text.strip() == example.target.strip()}
