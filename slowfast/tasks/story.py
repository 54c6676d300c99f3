"""Short stories from a seeded grammar: free choices early, facts that must agree later.

Prompt ``Story: Mia has two red apples .``; the model continues the story until the canvas
is full (there is no end-of-text: the continuation is the first ``gen_length`` tokens of a
longer story, cut wherever the canvas ends, so every run fills it). Events:

* ``At the park Mia finds one more red apple .`` (place and count are free choices)
* ``Mia loses two red apples .``
* ``Mia meets Tom . Tom gives Mia one more red apple .`` (a friend, named once, referred to)
* ``The sky is calm .`` (filler, all free)

and after every event that changes the count, ``Now Mia has four red apples .``: the
protagonist's name, colour and object are copied from the prompt, the friend from the
sentence before, the count is the last count plus or minus one or two (1-9, singular at
one). Free choices make far positions uncertain; once a choice is written, the sentence
that depends on it becomes certain: the slow-then-fast rhythm a real dLLM shows.

The scorer is a checker, not an exact match: the continuation must parse under the
grammar, every fact must agree with the ones before it, and a sentence cut by the end of
the canvas must be a valid beginning of one.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Optional

from .base import Diagnosis, Example, Task

NAMES = ["Mia", "Tom", "Sam", "Ana", "Ben", "Eva", "Leo", "Zoe", "Max", "Ivy", "Dan", "Kim"]
COLOURS = ["red", "blue", "green", "white", "black", "pink", "gold", "brown"]
OBJECTS = {"apple": "apples", "book": "books", "cup": "cups", "hat": "hats",
           "pen": "pens", "key": "keys", "ball": "balls", "shell": "shells"}
PLACES = ["park", "shop", "lake", "farm", "school", "beach", "hill", "town"]
THINGS = ["sun", "sky", "sea", "road", "tree", "room", "wind", "day"]
MOODS = ["warm", "calm", "long", "tall", "quiet", "cold", "bright", "still"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
START_MAX, COUNT_MAX, STEP_MAX = 5, 9, 2


def noun(obj: str, n: int) -> str:
    return obj if n == 1 else OBJECTS[obj]


def event(rng: random.Random, hero: str, colour: str, obj: str, n: int) -> tuple[list[str], int]:
    """One event (sentences as word lists joined later) and the count after it."""
    kinds = ["filler"]
    if n + 1 <= COUNT_MAX:
        kinds += ["find", "gift"]
    if n - 1 >= 1:
        kinds.append("lose")
    kind = rng.choice(kinds)
    if kind == "filler":
        return ["The", rng.choice(THINGS), "is", rng.choice(MOODS), "."], n
    if kind == "lose":
        k = rng.randint(1, min(STEP_MAX, n - 1))
        words, new = [hero, "loses", NUMBERS[k], colour, noun(obj, k), "."], n - k
    else:
        k = rng.randint(1, min(STEP_MAX, COUNT_MAX - n))
        more = [NUMBERS[k], "more", colour, noun(obj, k), "."]
        if kind == "find":
            words = ["At", "the", rng.choice(PLACES), hero, "finds"] + more
        else:
            friend = rng.choice([x for x in NAMES if x != hero])
            words = [hero, "meets", friend, ".", friend, "gives", hero] + more
        new = n + k
    return words + ["Now", hero, "has", NUMBERS[new], colour, noun(obj, new), "."], new


class Story(Task):
    name = "story"
    gen_length = 96  # the canvas is filled; a story of that many tokens has ~5-7 events
    primary_metric = "consistent"
    fills_canvas = True

    def sample(self, rng: random.Random) -> Example:
        hero, colour, obj = rng.choice(NAMES), rng.choice(COLOURS), rng.choice(list(OBJECTS))
        n = rng.randint(1, START_MAX)
        prompt = f"Story: {hero} has {NUMBERS[n]} {colour} {noun(obj, n)} ."
        words: list[str] = []
        count = n
        while len(words) < 160:  # longer than any canvas: the trainer cuts it at gen_length tokens
            more, count = event(rng, hero, colour, obj, count)
            words += more
        return Example(prompt=prompt, target=" " + " ".join(words),
                       meta={"hero": hero, "colour": colour, "object": obj, "count": n})

    def parse(self, prompt: str) -> Example | None:
        m = PROMPT_RE.match(prompt.strip())
        if not m or m.group(1) not in NAMES or m.group(2) not in NUMBERS or m.group(3) not in COLOURS:
            return None
        n = NUMBERS.index(m.group(2))
        obj = next((o for o in OBJECTS if noun(o, n) == m.group(4)), None)
        if obj is None:
            return None
        # a story has many right continuations: the checker scores it, there is no one target
        return Example(prompt=prompt.strip(), target="",
                       meta={"hero": m.group(1), "colour": m.group(3), "object": obj, "count": n})

    def score(self, example: Example, output_text: str) -> dict[str, float | bool]:
        ok, sentences, reason = check_story(example.prompt, output_text)
        return {"consistent": ok, "sentences": float(sentences), "error": reason}

    def diagnose(self, example: Example, output_text: str) -> Diagnosis:
        """The checker's verdict with the word it stopped at: ``where`` is that word's offset
        in ``output_text``, the reason names the slot (count, change, colour, name, ...) and
        the sentence it is in."""
        walk = walk_story(example.prompt, output_text)
        correct = self.correct(example, output_text)
        if correct:
            return Diagnosis(True, f"the story is consistent ({walk.sentences} sentences checked)")
        where = None
        if walk.word is not None:
            where = list(re.finditer(r"\S+", output_text))[walk.word].start()
        elif not output_text.strip():
            where = 0
        return Diagnosis(False, walk.said or walk.reason, where)


# ----------------------------------------------------------------------------- the checker
PROMPT_RE = re.compile(r"^Story: (\w+) has (\w+) (\w+) (\w+) \.$")


class _Reject(Exception):
    pass


def check_story(prompt: str, text: str) -> tuple[bool, int, str]:
    """(consistent, complete sentences checked, reason) for a continuation of ``prompt``.

    Walks the grammar word by word with the story's state; the last word may be cut (a
    prefix of an allowed word) and the last sentence may be unfinished. (``walk_story`` is
    the same walk with where it stopped and a reason in words.)
    """
    walk = walk_story(prompt, text)
    return walk.ok, walk.sentences, walk.reason


@dataclass(frozen=True)
class StoryWalk:
    """The checker's walk over a continuation: ``reason`` as ``check_story`` gives it
    (``word 12 'four': expected one of [...]``), ``word`` the index among ``text.split()`` of
    the word it rejected (None when it passes, or fails before any word), ``said`` the
    reason in words (``the count in 'Now Mia has four red apples' should be five``)."""

    ok: bool
    sentences: int
    reason: str
    word: Optional[int] = None
    said: str = ""


def _alternatives(allowed: list[str]) -> str:
    """``five``, ``one or two``, ``At, The or Mia``, ``one of warm, calm, ...``."""
    shown = ["a full stop" if a == "." else a for a in allowed]
    if len(shown) <= 3:
        return ", ".join(shown[:-1]) + (" or " if len(shown) > 1 else "") + shown[-1]
    return "one of " + ", ".join(shown[:8]) + (", ..." if len(shown) > 8 else "")


def _sentence(words: list[str], pos: int, start: int) -> str:
    """The sentence (from word ``start``) that word ``pos`` is in, without its full stop."""
    end = pos + 1 if words[pos] == "." else next((j for j in range(pos + 1, len(words)) if words[j] == "."), len(words))
    shown = words[start:end]
    if len(shown) > 12:  # no full stop where one belongs: show the words up to the rejected one
        shown = words[max(start, pos - 8):pos + 3]
        return "... " + " ".join(shown) + " ..."
    return " ".join(shown)


def walk_story(prompt: str, text: str) -> StoryWalk:
    """``check_story``'s walk, keeping which word it rejected and why, in words."""
    walk = _start_walk(prompt, text)
    if isinstance(walk, StoryWalk):  # nothing to walk: the refusal
        return walk
    try:
        while True:
            walk.sentence()
    except StopIteration:
        return StoryWalk(True, walk.sentences, "")
    except _Reject as exc:
        return StoryWalk(False, walk.sentences, exc.args[0], walk.pos, exc.args[1])


def _start_walk(prompt: str, text: str) -> "StoryWalk | _Walk":
    """A walk over ``text`` from the story the prompt begins, or the refusal when there is none."""
    m = PROMPT_RE.match(prompt.strip())
    if not m or m.group(1) not in NAMES or m.group(2) not in NUMBERS or m.group(3) not in COLOURS:
        return StoryWalk(False, 0, "the prompt is not a story prompt", said="the prompt is not a story prompt")
    count = NUMBERS.index(m.group(2))
    obj = next((o for o in OBJECTS if noun(o, count) == m.group(4)), None)
    if obj is None:
        return StoryWalk(False, 0, "the prompt's object is not known", said="the prompt's object is not known")
    words = text.split()
    if not words:
        return StoryWalk(False, 0, "empty continuation", said="the continuation is empty")
    trailing_cut = not text[-1].isspace()  # the last word may be a cut-off prefix
    return _Walk(words, trailing_cut, m.group(1), m.group(3), obj, count)


class _Walk:
    """Reads a continuation word by word against the grammar, keeping the story's count.
    ``take`` raises StopIteration where the text ends (a cut-off prefix of an allowed last word
    too) and ``_Reject`` at the first word the grammar does not allow."""

    def __init__(self, words: list[str], trailing_cut: bool, hero: str, colour: str, obj: str, count: int):
        self.words, self.trailing_cut = words, trailing_cut
        self.hero, self.colour, self.obj, self.count = hero, colour, obj, count
        self.pos = 0
        self.start = 0  # where the sentence being read began
        self.sentences = 0

    def take(self, allowed, what: str = "") -> str:
        if self.pos >= len(self.words):
            raise StopIteration
        w = self.words[self.pos]
        last = self.pos == len(self.words) - 1
        allowed = [allowed] if isinstance(allowed, str) else list(allowed)
        if w in allowed or (last and self.trailing_cut and any(a.startswith(w) for a in allowed)):
            self.pos += 1
            if w not in allowed:
                raise StopIteration  # a valid beginning of the last word
            if w == ".":
                self.start = self.pos
            return w
        raise _Reject(f"word {self.pos + 1} {w!r}: expected one of {allowed[:8]}", self.said(w, allowed, what))

    def said(self, w: str, allowed: list[str], what: str) -> str:
        """Why ``w`` is rejected, in words."""
        sentence = _sentence(self.words, self.pos, self.start)
        if not allowed:
            return f"the {what} in '{sentence}' is not possible: {self.hero} has {NUMBERS[self.count]}"
        if what:
            return f"the {what} in '{sentence}' should be {_alternatives(allowed)}"
        return f"{w!r} in '{sentence}' should be {_alternatives(allowed)}"

    def change(self, k_allowed: list[int]) -> int:
        return NUMBERS.index(self.take([NUMBERS[i] for i in k_allowed], "change"))

    def more(self) -> None:
        """``<k> more <colour> <objects> .``: the hero gains k."""
        k = self.change([i for i in range(1, STEP_MAX + 1) if self.count + i <= COUNT_MAX])
        self.take("more"), self.take(self.colour, "colour"), self.take(noun(self.obj, k), "object"), self.take(".")
        self.count += k

    def sentence(self) -> None:
        """One sentence: a scene (``The ...``), or an event and the ``Now <hero> has ...`` after it."""
        first = self.take(["At", "The", self.hero], "first word")
        if first == "The":
            self.take(THINGS), self.take("is"), self.take(MOODS), self.take(".")
            self.sentences += 1
            return
        if first == "At":
            self.take("the"), self.take(PLACES, "place"), self.take(self.hero, "name"), self.take("finds")
            self.more()
        elif self.take(["loses", "meets"]) == "loses":
            k = self.change([i for i in range(1, STEP_MAX + 1) if self.count - i >= 1])
            self.take(self.colour, "colour"), self.take(noun(self.obj, k), "object"), self.take(".")
            self.count -= k
        else:
            friend = self.take([x for x in NAMES if x != self.hero], "friend")
            self.take("."), self.take(friend, "friend"), self.take("gives"), self.take(self.hero, "name")
            self.sentences += 1
            self.more()
        self.sentences += 1
        self.take("Now"), self.take(self.hero, "name"), self.take("has"), self.take(NUMBERS[self.count], "count")
        self.take(self.colour, "colour"), self.take(noun(self.obj, self.count), "object"), self.take(".")
        self.sentences += 1


def count_events(strings: list[str]) -> list[tuple[int, int, int]]:
    """(change, its noun, new count) token positions of every count change in a story's
    response tokens ``strings``: ``loses two red apples`` / ``two more red apples`` followed
    by ``Now Mia has four``. Events cut by the canvas are left out."""
    words = [w.strip() for w in strings]
    nouns = set(OBJECTS) | set(OBJECTS.values())
    out = []
    for i, w in enumerate(words):
        if w == "more" and i > 0:
            k, noun = i - 1, i + 2
        elif i > 0 and words[i - 1] == "loses":
            k, noun = i, i + 2
        else:
            continue
        has = next((j for j in range(noun + 1, len(words)) if words[j] == "has"), None)
        if has is None or has + 1 >= len(words):
            continue
        n = has + 1
        if words[k] in NUMBERS and words[n] in NUMBERS and words[noun] in nouns:
            out.append((k, noun, n))
    return out
