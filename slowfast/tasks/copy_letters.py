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

from .base import Diagnosis, Example, Task, first_difference

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

    def diagnose(self, example: Example, output_text: str) -> Diagnosis:
        """The exact match, and where it fails: the first character of ``output_text`` that
        departs from the copy, named by the letter (or the space or full stop) expected there."""
        if self.correct(example, output_text):
            return Diagnosis(True, f"all {len(example.meta['letters'])} letters are copied")
        where, j = first_difference(output_text, example.target)
        out, want = output_text.strip(), example.target.strip()
        n = j // 2 + 1  # the letter at (or the separator after) offset j of the copy
        if j >= len(out):  # the output is a beginning of the copy
            if not out:
                return Diagnosis(False, "the output is empty", where)
            if want[j] == ".":
                return Diagnosis(False, "the full stop after the last letter is missing", where)
            return Diagnosis(False, f"the copy stops after letter {n if j % 2 else n - 1}", where)
        if j >= len(want):
            return Diagnosis(False, f"the copy is followed by {out[j:j + 12]!r}", where)
        got = "a space" if out[j].isspace() else re.match(r"[^\s.]+|\S", out[j:]).group(0)
        shown = got if got == "a space" else repr(got)
        if want[j] in " .":
            after = f"after letter {n}" if want[j] == " " else "after the last letter"
            expected = "a space" if want[j] == " " else "the full stop"
            return Diagnosis(False, f"{after} the output has {shown}, expected {expected}", where)
        return Diagnosis(False, f"letter {n} is {shown}, expected {want[j]!r}", where)
