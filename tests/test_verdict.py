"""The run view's verdict (slowfast.tasks.verdict): right or wrong exactly as each task's own
scorer says, a reason in words, and the offset in the output where its checker found it
going wrong."""
from __future__ import annotations

import random
import re
import string

import pytest

from slowfast.tasks import TASKS, Verdict, example_for, verdict
from slowfast.tasks.story import NUMBERS

CHAIN = "Q: 7+5-3+8-6=? A:"  # 7+5=12, 12-3=09, 09+8=17, 17-6=11
COPY = "Copy: c f a k e q x z. A:"
STORY_PROMPT = "Story: Mia has two red apples ."
STORY = (" At the park Mia finds one more red apple . Now Mia has three red apples . The sky is calm ."
         " Mia meets Tom . Tom gives Mia two more red apples . Now Mia has five red apples .")


def test_verdict_is_none_for_a_prompt_in_no_task_format():
    for prompt in ("", "hello", "Q: 7+5=? A: 12", "Story: Zed has two red apples ."):
        assert verdict(prompt, "anything") is None


def test_verdict_is_a_frozen_record():
    v = verdict(CHAIN, " 7+5=12, 12-3=09, 09+8=17, 17-6=11. The answer is 11.")
    assert v == Verdict(task="arithmetic", correct=True, metric="answer_correct",
                        reason="the answer is 11, as expected", where=None)
    with pytest.raises(AttributeError):
        v.correct = False


# ------------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize("text, reason, at", [
    (" 7+5=12, 12-3=09, 09+8=18, 18-6=12. The answer is 12.",
     "the answer is 12, expected 11: operation 3 reads '09+8=18', expected '09+8=17'", "8, 18-6"),
    (" 7+5=12, 12-3=08, 08+8=16, 16-6=10. The answer is 10.",
     "the answer is 10, expected 11: operation 2 reads '12-3=08', expected '12-3=09'", "8, 08+8"),
    (" 7+5=12, 12-3=09, 09+8=17, 17-6=11. The answer is 17.",
     "the answer is 17, expected 11; the working before it is right", "7."),
    (" 7+5=12, 12-3=09, 09+8=17",
     "there is no final answer ('The answer is ...'), expected 11: the output stops after '09+8=17'", ""),
    (" 7+5=12, 12-3=09, 09+8=17, 17-6=11. The answer is 11. The answer is 13.",
     "the answer is 13, expected 11: 'The answer is 13' follows the answer", "The answer is 13"),
    ("", "there is no final answer ('The answer is ...'), expected 11: the output is empty", ""),
])
def test_arithmetic_wrong_answers_say_which_operation_goes_wrong(text, reason, at):
    v = verdict(CHAIN, text)
    assert (v.task, v.correct, v.metric, v.reason) == ("arithmetic", False, "answer_correct", reason)
    assert text[v.where:].startswith(at) and (at or v.where == len(text))


def test_arithmetic_right_answer_with_wrong_working_is_right():
    # the scorer reads the answer, not the working: the verdict agrees with it
    v = verdict(CHAIN, " 7+5=11, 11-3=08, 08+8=17, 17-6=11. The answer is 11.")
    assert v.correct is True and v.where is None


# ------------------------------------------------------------------------------------- copy
@pytest.mark.parametrize("text, reason, at", [
    (" c k a k e q x z.", "letter 2 is 'k', expected 'f'", "k a k"),
    (" c f a k e q x y.", "letter 8 is 'y', expected 'z'", "y."),
    (" c f a k", "the copy stops after letter 4", ""),
    (" c f a k e q x z", "the full stop after the last letter is missing", ""),
    (" c f ak e q x z.", "after letter 3 the output has 'k', expected a space", "k e"),
    (" c f a k e q x z. z", "the copy is followed by ' z'", " z"),
    ("", "the output is empty", ""),
])
def test_copy_wrong_outputs_name_the_letter(text, reason, at):
    v = verdict(COPY, text)
    assert (v.task, v.correct, v.metric, v.reason) == ("copy", False, "exact_match", reason)
    assert text[v.where:].startswith(at) and (at or v.where == len(text))


def test_copy_right():
    v = verdict(COPY, " c f a k e q x z.")
    assert v.correct is True and v.where is None and v.reason == "all 8 letters are copied"


# ------------------------------------------------------------------------------------ story
@pytest.mark.parametrize("broken, reason, at", [
    (STORY.replace("has three", "has four"), "the count in 'Now Mia has four red apples' should be three", "four red"),
    (STORY.replace("more red apple .", "more blue apple ."),
     "the colour in 'At the park Mia finds one more blue apple' should be red", "blue apple"),
    (STORY.replace("Tom gives", "Ben gives"), "the friend in 'Ben gives Mia two more red apples' should be Tom", "Ben gives"),
    (STORY.replace("has three red apples", "has three red apple"),
     "the object in 'Now Mia has three red apple' should be apples", "apple ."),
    (STORY.replace(" . Now Mia has three", " . Then Mia has three"),
     "'Then' in 'Then Mia has three red apples' should be Now", "Then"),
    (" Tom finds", "the first word in 'Tom finds' should be At, The or Mia", "Tom"),
    (" Mia loses five red apples .", "the change in 'Mia loses five red apples' should be one", "five"),
    ("", "the continuation is empty", ""),
])
def test_story_wrong_outputs_name_the_sentence_and_slot(broken, reason, at):
    v = verdict(STORY_PROMPT, broken)
    assert (v.task, v.correct, v.metric, v.reason) == ("story", False, "consistent", reason)
    assert broken[v.where:].startswith(at) and (at or v.where == 0)


def test_story_right_and_cut_anywhere_is_right():
    for cut in range(2, len(STORY) + 1, 5):
        v = verdict(STORY_PROMPT, STORY[:cut])
        assert v.correct is True and v.where is None, STORY[:cut]


# --------------------------------------------------------- agreement with Task.correct at scale
def corruptions(task_name: str, target: str, rng: random.Random) -> list[tuple[str, int]]:
    """Outputs near ``target`` with where each first departs from it (its first changed offset)."""
    out = [(target, len(target))]
    for _ in range(4):
        i = rng.randrange(len(target))
        if task_name == "arithmetic" and target[i].isdigit():
            new = str((int(target[i]) + rng.randint(1, 9)) % 10)
        elif task_name == "copy" and target[i].isalpha():
            new = rng.choice([c for c in string.ascii_lowercase if c != target[i]])
        else:
            new = rng.choice(["", " ", ".", ",", "x", "7"])
        out.append((target[:i] + new + target[i + 1:], i))
    out.append((target[:rng.randrange(len(target))], len(target)))  # cut
    out.append((target + rng.choice([" The answer is 3.", " z", " ."]), len(target)))
    return out


def story_corruptions(target: str, rng: random.Random) -> list[tuple[str, int]]:
    """A story cut where a canvas would end, with one word swapped for another from the
    vocabulary: the checker may accept it, or stop at it or at a later word it contradicts."""
    text = target[:rng.randint(200, 400)]
    words = list(re.finditer(r"\S+", text))
    vocab = NUMBERS + ["red", "blue", "apple", "apples", "Tom", "Mia", "Now", "has", ".", "more"]
    out = [(text, len(text))]
    for _ in range(4):
        w = rng.choice(words)
        out.append((text[:w.start()] + rng.choice(vocab) + text[w.end():], w.start()))
    return out


@pytest.mark.parametrize("name", sorted(TASKS))
def test_verdict_agrees_with_the_task_scorer_on_generated_and_corrupted_outputs(name):
    task = TASKS[name]
    rng = random.Random(f"verdict:{name}")
    wrong = 0
    for ex in task.examples("train", 150, seed=11):
        cases = story_corruptions(ex.target, rng) if name == "story" else corruptions(name, ex.target, rng)
        for text, changed in cases:
            v = verdict(ex.prompt, text)
            found_task, found = example_for(ex.prompt)
            assert v.correct is task.correct(found, text) is task.correct(ex, text), text
            assert task.diagnose(found, text).correct is v.correct
            assert v.task == name and v.metric == task.primary_metric and v.reason
            if v.correct:
                assert v.where is None
                continue
            wrong += 1
            assert v.where is not None and 0 <= v.where <= len(text), (text, v)
            # the checker never stops before the first change: everything before it is right
            assert v.where >= min(changed, len(text.rstrip())), (text, v)
            if name == "story":  # it stops at a word
                assert v.where == 0 or text[v.where - 1].isspace() and not text[v.where].isspace()
    assert wrong > 100


def test_a_question_in_a_chat_form_gets_the_verdict_of_its_task():
    """What a newcomer types in the chat box (``What is 7+5-3+8-6?``) is scored as the chain it
    asks, by the same scorer; a question of no task is not."""
    worked = " 7+5=12, 12-3=09, 09+8=17, 17-6=11. The answer is 11."
    asked = verdict("What is 7+5-3+8-6?", worked)
    assert asked.task == "chat-arithmetic" and asked.correct and asked.reason == verdict(CHAIN, worked).reason
    bad = worked.replace("09+8=17", "09+8=18").replace("17-6=11", "18-6=12").replace("is 11", "is 12")
    wrong = verdict("What is 7+5-3+8-6?", bad)
    assert not wrong.correct and "operation 3 reads '09+8=18'" in wrong.reason
    assert (wrong.reason, wrong.where) == (verdict(CHAIN, bad).reason, verdict(CHAIN, bad).where)
    assert verdict("Copy: c f a k e q x z", " c f a k e q x z.").task == "chat-copy"
    told = verdict("Tell me a story about Mia and her two red apples.", STORY)
    assert told.task == "chat-story" and told.correct == verdict(STORY_PROMPT, STORY).correct
    for prompt in ("What is 7?", "What is love?", "Tell me a story."):
        assert verdict(prompt, worked) is None
