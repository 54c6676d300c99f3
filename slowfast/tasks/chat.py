"""The embedded model's chat template, and its three tasks asked as questions in it.

The template is short on purpose (the model is small and trained on nothing else)::

    User: What is 7+5-3?
    Assistant: 7+5=12, 12-3=09. The answer is 09.<|endoftext|>

A conversation is its turns in order, each on its own line: ``User: `` or ``System: `` and the
text, or ``Assistant:`` and the answer (which, as every task answer, starts with a space) ended
by end-of-text; ``add_generation_prompt`` ends the text with ``Assistant:``, where the model
writes. It needs no new tokens: ``User``, ``Assistant`` and the newline are spelled with the
byte-level tokens the tokenizer already has.

A chat task asks a base task's problem as a question (``What is 7+5-3?``, ``Tell me a story
about Mia and her two red apples.``, ``Copy: c f a k e q x z``) and expects the base task's
answer, scored by the base task's scorer. Its split is the base problem's (the hash of the base
task's prompt), so a held-out chain is held out in both forms. A share of the training problems
(``raw_share``) asks the base prompt itself inside the template, as the app does when chat is
on and a task prompt is typed.
"""
from __future__ import annotations

import random
import re
from typing import Optional

from .base import Diagnosis, Example, Task
from .registry import SHIPPED_SET, example_for, task_set
from .story import PROMPT_RE as STORY_PROMPT_RE

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "Assistant:{{ '' if message['content'].startswith(' ') else ' ' }}{{ message['content'] }}<|endoftext|>"
    "{%- elif message['role'] == 'system' -%}System: {{ message['content'] }}"
    "{%- else -%}User: {{ message['content'] }}"
    "{%- endif -%}{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}Assistant:{%- endif -%}"
)

HER = {"Mia", "Ana", "Eva", "Zoe", "Ivy", "Kim"}  # the story's names read as girls'; the others as boys'
QUESTION_RE = {
    "arithmetic": re.compile(r"^What is (\d+(?:[+-]\d+)+)\?$"),
    "story": re.compile(r"^Tell me a story about (\w+) and (?:her|his) (\w+) (\w+) (\w+)\.$"),
    "copy": re.compile(r"^Copy: ([a-z](?: [a-z])*)$"),
}


def render(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """What ``CHAT_TEMPLATE`` renders, in plain Python (tests compare the two)."""
    out = []
    for m in messages:
        role, content = m["role"], m["content"]
        if role == "assistant":
            out.append("Assistant:" + ("" if content.startswith(" ") else " ") + content + "<|endoftext|>\n")
        else:
            out.append(("System: " if role == "system" else "User: ") + content + "\n")
    return "".join(out) + ("Assistant:" if add_generation_prompt else "")


def question(base: str, prompt: str) -> str:
    """The base task's ``prompt`` asked as a question."""
    if base == "arithmetic":
        return "What is " + prompt[len("Q: "):-len("=? A:")] + "?"
    if base == "story":
        m = STORY_PROMPT_RE.match(prompt)
        hero, count, colour, things = m.groups()
        return f"Tell me a story about {hero} and {'her' if hero in HER else 'his'} {count} {colour} {things}."
    if base == "copy":
        return prompt[:-len(". A:")]
    raise ValueError(f"base task: {base!r} has no question form; allowed: arithmetic, story, copy")


def base_prompt(base: str, text: str) -> Optional[str]:
    """The base task's prompt a question (or the base prompt itself) asks; None for other text."""
    text = text.strip()
    m = QUESTION_RE[base].match(text)
    if m is None:
        return text
    if base == "arithmetic":
        return f"Q: {m.group(1)}=? A:"
    if base == "story":
        return f"Story: {m.group(1)} has {m.group(2)} {m.group(3)} {m.group(4)} ."
    return f"Copy: {m.group(1)}. A:"


class ChatTask(Task):
    """A base task's problems asked in the chat template (the prompt is the user's message)."""

    chat = True

    def __init__(self, base: Task, raw_share: float = 0.0):
        self.base = base
        self.name = f"chat-{base.name}"
        self.gen_length = base.gen_length
        self.primary_metric = base.primary_metric
        self.fills_canvas = base.fills_canvas
        self.raw_share = raw_share

    def wrap(self, ex: Example, raw: bool = False) -> Example:
        prompt = ex.prompt if raw else question(self.base.name, ex.prompt)
        return Example(prompt=prompt, target=ex.target, meta={**ex.meta, "base_prompt": ex.prompt})

    def sample(self, rng: random.Random) -> Example:
        ex = self.base.sample(rng)
        return self.wrap(ex, raw=self.raw_share > 0 and rng.random() < self.raw_share)

    def split_of(self, example: Example) -> str:
        return self.base.split_of(Example(example.meta["base_prompt"], example.target, example.meta))

    def base_example(self, example: Example) -> Example:
        return Example(example.meta["base_prompt"], example.target, example.meta)

    def parse(self, prompt: str) -> Optional[Example]:
        base = base_prompt(self.base.name, prompt)
        ex = self.base.parse(base) if base is not None else None
        return None if ex is None else Example(prompt.strip(), ex.target, {**ex.meta, "base_prompt": ex.prompt})

    def score(self, example: Example, output_text: str) -> dict[str, float | bool]:
        return self.base.score(self.base_example(example), output_text)

    def correct(self, example: Example, output_text: str) -> bool:
        return self.base.correct(self.base_example(example), output_text)

    def diagnose(self, example: Example, output_text: str) -> Diagnosis:
        return self.base.diagnose(self.base_example(example), output_text)


def chat_tasks(raw_share: float = 0.0, version: str = "v3") -> dict[str, ChatTask]:
    """The chat forms of a task set's tasks by name (``chat-story``, ``chat-arithmetic``,
    ``chat-copy``); the chat template comes with the v3 model, so v3's by default."""
    return {f"chat-{name}": ChatTask(task, raw_share) for name, task in task_set(version).items()}


CHAT_TASKS: dict[str, ChatTask] = chat_tasks(0.0, SHIPPED_SET)  # held-out evaluation: every prompt a question


def example_or_question(prompt: str) -> Optional[tuple[Task, Example]]:
    """``registry.example_for``, and else the chat form whose question ``prompt`` is (``What is
    7+5-3?`` -> ``chat-arithmetic``), so a run on a question is scored too; None for other text."""
    found = example_for(prompt)
    if found is not None:
        return found
    for task in CHAT_TASKS.values():
        example = task.parse(prompt)
        if example is not None and example.prompt != example.meta["base_prompt"]:
            return task, example
    return None
