"""What every task shares: the example record, the split rule and the task interface."""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Example:
    """One checkable prompt: the model sees ``prompt`` and should answer ``target``."""

    prompt: str
    target: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Diagnosis:
    """Why an output passes or fails its task's checker: ``correct`` is ``Task.correct``'s
    answer, ``reason`` one short sentence, ``where`` the character offset in the output where
    the checker found it going wrong (None when it is right)."""

    correct: bool
    reason: str
    where: Optional[int] = None


def first_difference(text: str, target: str) -> tuple[int, int]:
    """Where ``text`` first departs from ``target``, both stripped as the exact-match scorers
    compare them: (offset in ``text``, offset in ``target.strip()``). The offset is where the
    shorter one ends when it is a prefix of the other."""
    lead = len(text) - len(text.lstrip())
    out, want = text.strip(), target.strip()
    j = next((i for i, (a, b) in enumerate(zip(out, want)) if a != b), min(len(out), len(want)))
    return lead + j, j


def is_heldout(key: str, percent: int = 10) -> bool:
    """Fixed split by a stable hash of the problem, so no seed can leak held-out items into training."""
    return zlib.crc32(key.encode("utf-8")) % 100 < percent


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: {split!r} is not allowed; allowed: {', '.join(SPLITS)}")


class Task(ABC):
    """A seeded generator with a fixed held-out split and a scorer.

    Subclasses implement ``sample(rng)`` (one random problem, either split) and ``score``.
    ``primary_metric`` names the key of ``score``'s result that the bar is measured on.
    """

    name: str = ""
    gen_length: int = 32
    primary_metric: str = "exact_match"
    fills_canvas: bool = False  # True: the answer runs to the end of any canvas (no EOS)

    @abstractmethod
    def sample(self, rng: random.Random) -> Example:
        """One random problem (either split)."""

    def split_of(self, example: Example) -> str:
        return "heldout" if is_heldout(f"{self.name}|{example.prompt}") else "train"

    def draw(self, rng: random.Random, split: str) -> Example:
        """One example of ``split`` from ``rng`` (rejection on the fixed split rule)."""
        check_split(split)
        while True:
            ex = self.sample(rng)
            if self.split_of(ex) == split:
                return ex

    def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
        """``n`` distinct examples of ``split``, the same for the same ``seed``."""
        check_split(split)
        rng = random.Random(f"{self.name}:{split}:{seed}")
        out: list[Example] = []
        seen: set[str] = set()
        tries = 0
        while len(out) < n:
            ex = self.draw(rng, split)
            tries += 1
            if ex.prompt in seen and tries < 50 * n + 1000:
                continue
            seen.add(ex.prompt)
            out.append(ex)
        return out

    @abstractmethod
    def score(self, example: Example, output_text: str) -> dict[str, float | bool]:
        """Metrics of ``output_text`` against ``example``; includes ``primary_metric``."""

    def parse(self, prompt: str) -> Optional[Example]:
        """The example whose prompt is ``prompt`` (typed by hand or from either split), so any
        run on it can be scored; None when ``prompt`` is not one of this task's."""
        return None

    def correct(self, example: Example, output_text: str) -> bool:
        """Whether ``output_text`` passes the task's primary metric."""
        return bool(self.score(example, output_text)[self.primary_metric])

    def diagnose(self, example: Example, output_text: str) -> Diagnosis:
        """``correct``'s answer with the reason and where in ``output_text`` it goes wrong.
        Tasks refine this from their own checker; the default says only right or wrong."""
        if self.correct(example, output_text):
            return Diagnosis(True, f"the output passes the {self.name} checker")
        return Diagnosis(False, f"the output fails the {self.name} checker ({self.primary_metric})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, gen_length={self.gen_length})"
