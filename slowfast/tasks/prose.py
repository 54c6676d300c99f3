"""Short public-domain English (Jane Austen) for free-text demos and masked-token accuracy.

Paragraphs come from ``data/austen.txt.gz`` (see ``data/PROVENANCE.md``); every 20th
paragraph is held out. An example's prompt is the first words of a paragraph and its
target the words that follow; the score compares words position by position (a demo
measure; the model card reports held-out masked-token accuracy, computed in ``train.py``).
"""
from __future__ import annotations

import functools
import gzip
import random
from pathlib import Path

from .base import Example, Task, check_split

DATA = Path(__file__).resolve().parent / "data" / "austen.txt.gz"


@functools.lru_cache(maxsize=1)
def paragraphs() -> tuple[str, ...]:
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        return tuple(line.strip() for line in f if line.strip())


def texts(split: str) -> list[str]:
    """The paragraphs of ``split`` (held out: index % 20 == 7)."""
    check_split(split)
    return list(_texts(split))


@functools.lru_cache(maxsize=2)
def _texts(split: str) -> tuple[str, ...]:
    held = split == "heldout"
    return tuple(p for i, p in enumerate(paragraphs()) if (i % 20 == 7) == held)


@functools.lru_cache(maxsize=4)
def _pool(split: str, min_words: int) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(p.split()) for p in _texts(split) if len(p.split()) >= min_words)


class Prose(Task):
    name = "prose"
    gen_length = 64
    primary_metric = "word_accuracy"

    def __init__(self, prompt_words: int = 8, target_words: int = 24):
        self.prompt_words = prompt_words
        self.target_words = target_words

    def draw(self, rng: random.Random, split: str) -> Example:
        check_split(split)
        words = rng.choice(_pool(split, self.prompt_words + 5))
        start = rng.randrange(0, max(1, len(words) - self.prompt_words - self.target_words))
        prompt = " ".join(words[start:start + self.prompt_words])
        tail = words[start + self.prompt_words:start + self.prompt_words + self.target_words]
        return Example(prompt=prompt, target=" " + " ".join(tail), meta={"split": split})

    def sample(self, rng: random.Random) -> Example:
        return self.draw(rng, "train")

    def split_of(self, example: Example) -> str:
        return example.meta.get("split", "train")

    def score(self, example: Example, output_text: str) -> dict[str, float | bool]:
        want, got = example.target.split(), output_text.split()
        hits = sum(a == b for a, b in zip(want, got))
        return {"word_accuracy": hits / max(1, len(want)), "exact_match": want == got}
