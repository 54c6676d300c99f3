"""The task sets: seeded, with a fixed held-out split, and scorers that read answers right."""
from __future__ import annotations

import re
import zlib

import pytest

from slowfast.tasks import SPLITS, TASKS, Example, example_for, heldout_prompts, is_heldout
from slowfast.tasks.registry import CHAIN_OPS, SHIPPED_SET


@pytest.mark.parametrize("name", sorted(TASKS))
def test_examples_are_deterministic_per_seed(name):
    task = TASKS[name]
    assert task.examples("heldout", 20, seed=3) == task.examples("heldout", 20, seed=3)
    assert task.examples("train", 20, seed=3) == task.examples("train", 20, seed=3)
    assert task.examples("train", 20, seed=3) != task.examples("train", 20, seed=4)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_heldout_never_appears_in_train(name):
    task = TASKS[name]
    held = {ex.prompt for ex in task.examples("heldout", 200)}
    train = {ex.prompt for seed in range(3) for ex in task.examples("train", 500, seed=seed)}
    assert held and not held & train
    assert all(task.split_of(ex) == "heldout" for ex in task.examples("heldout", 50))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_interface(name):
    task = TASKS[name]
    assert task.name == name
    assert task.gen_length % 8 == 0 and task.gen_length > 0
    ex = task.examples("heldout", 1)[0]
    assert isinstance(ex, Example) and ex.prompt and ex.target
    assert task.primary_metric in task.score(ex, ex.target)
    with pytest.raises(ValueError):
        task.examples("test", 1)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_target_scores_perfectly(name):
    task = TASKS[name]
    for ex in task.examples("heldout", 20):
        assert task.score(ex, ex.target)[task.primary_metric] in (True, 1.0)
        if not task.fills_canvas:  # a story is checked, not matched: many are right
            assert task.score(ex, ex.target)["exact_match"] is True


def test_heldout_prompts_convenience():
    prompts = heldout_prompts("arithmetic", 5)
    assert prompts == [ex.prompt for ex in TASKS["arithmetic"].examples("heldout", 5)]
    assert len(set(prompts)) == 5


def test_arithmetic_worked_steps_reuse_previous_result():
    seen_ops, small, sub_first = set(), False, False
    lo, hi = CHAIN_OPS[SHIPPED_SET]
    for ex in TASKS["arithmetic"].examples("train", 300):
        operands = [int(d) for d in re.findall(r"\d", ex.prompt.split("=")[0])]
        assert lo + 1 <= len(operands) <= hi + 1 and all(1 <= d <= 9 for d in operands)
        steps = re.findall(r"(\d+)([+-])(\d+)=(\d+)", ex.target)
        assert len(steps) == len(operands) - 1
        # fixed width: every result and every reuse of one has two digits; the first operand is the prompt's
        assert all(len(r) == 2 for *_, r in steps) and all(len(a) == 2 for a, *_ in steps[1:])
        assert steps[0][0] == str(operands[0])
        seen_ops.add(len(steps))
        value = operands[0]
        sub_first |= steps[0][1] == "-"
        for (a, op, b, r) in steps:
            assert int(a) == value
            value = int(a) + int(b) if op == "+" else int(a) - int(b)
            assert int(r) == value and 0 <= value <= 29
            small |= value < 10
        assert ex.target.endswith(f". The answer is {value:02d}.") and ex.meta["answer"] == value
    assert seen_ops == set(range(lo, hi + 1)) and small and sub_first


def test_arithmetic_layout_is_fixed_by_the_number_of_operations():
    """Where every number, sign and comma goes (and so where the answer ends) depends only on
    how many operations the prompt has, never on the values."""
    layouts = {}
    for ex in TASKS["arithmetic"].examples("train", 300):
        n_ops = len(ex.meta["ops"])
        layouts.setdefault(n_ops, set()).add(re.sub(r"\d", "0", re.sub(r"[+-]", "+", ex.target)))
    lo, hi = CHAIN_OPS[SHIPPED_SET]
    assert sorted(layouts) == list(range(lo, hi + 1)) and all(len(v) == 1 for v in layouts.values())


def test_arithmetic_rejects_results_that_do_not_fit_two_digits():
    from slowfast.tasks.arithmetic import Arithmetic

    for lo, hi in ((-5, 29), (0, 100), (10, 5)):
        with pytest.raises(ValueError, match="two digits"):
            Arithmetic(min_result=lo, max_result=hi)


def test_arithmetic_answers_fit_the_canvas():
    from slowfast.models import load_model

    tok = load_model("embedded", device="cpu").tokenizer
    longest = max(len(tok(ex.target)["input_ids"]) for ex in TASKS["arithmetic"].examples("train", 500))
    assert longest < TASKS["arithmetic"].gen_length


def test_arithmetic_example_format():
    task = TASKS["arithmetic"]
    ex = task.parse("Q: 7+5-3+8=? A:")
    assert ex.target == " 7+5=12, 12-3=09, 09+8=17. The answer is 17." and ex.meta["answer"] == 17
    assert task.parse("Q: 7+5-9-3=? A:").target == " 7+5=12, 12-9=03, 03-3=00. The answer is 00."
    assert task.score(ex, " 7+5=12, 12-3=09, 09+8=17. The answer is 17.") == {
        "answer_correct": True, "exact_match": True}
    # right answer, wrong working: the answer counts, the line does not
    assert task.score(ex, " 7+5=11, 11-3=08, 08+8=17. The answer is 17.") == {
        "answer_correct": True, "exact_match": False}
    # the answer is read as a number, with or without its leading zero
    low = task.parse("Q: 7+5-9-3=? A:")
    assert task.score(low, " 7+5=12, 12-9=03, 03-3=00. The answer is 0.")["answer_correct"] is True
    assert task.score(ex, " 7+5=12, 12-3=09, 09+8=17. The answer is 18.")["answer_correct"] is False
    assert task.score(ex, " 7+5=12, 12-3=09, 09+8=17.")["answer_correct"] is False
    assert task.score(ex, "")["answer_correct"] is False
    # surrounding whitespace is not an error
    assert task.score(ex, "7+5=12, 12-3=09, 09+8=17. The answer is 17.  ")["exact_match"] is True


def test_copy_format_and_scoring():
    task = TASKS["copy"]
    ex = task.examples("heldout", 1)[0]
    letters = ex.meta["letters"]
    assert len(letters) == 8
    assert ex.prompt == "Copy: " + " ".join(letters) + ". A:"
    assert ex.target == " " + " ".join(letters) + "."
    assert task.score(ex, ex.target) == {"exact_match": True}
    assert task.score(ex, " " + " ".join(reversed(letters)) + "!")["exact_match"] is False
    assert task.score(ex, ex.target[:-3] + ".")["exact_match"] is False


STORY_PROMPT = "Story: Mia has two red apples ."
STORY = (" At the park Mia finds one more red apple . Now Mia has three red apples . The sky is calm ."
         " Mia meets Tom . Tom gives Mia two more red apples . Now Mia has five red apples ."
         " Mia loses two red apples . Now Mia has three red apples . Mia loses two red apples ."
         " Now Mia has one red apple .")


def test_story_checker_accepts_every_cut_of_a_consistent_story():
    task = TASKS["story"]
    ex = Example(STORY_PROMPT, STORY)
    for cut in range(2, len(STORY) + 1):  # the canvas may end anywhere, even inside a word
        assert task.score(ex, STORY[:cut])["consistent"] is True, STORY[:cut]
    for ex in task.examples("heldout", 30):
        assert all(task.score(ex, ex.target[:cut])["consistent"] for cut in range(2, len(ex.target), 7))


@pytest.mark.parametrize("broken, why", [
    (STORY.replace("has three", "has four"), "a count that does not add up"),
    (STORY.replace("more red apple .", "more blue apple ."), "a colour that changed"),
    (STORY.replace("Tom gives", "Ben gives"), "a friend who was not the one met"),
    (STORY.replace("one red apple .", "zero red apples ."), "losing everything (counts stay 1-9)"),
    (STORY.replace("one red apple .", "one red apples ."), "plural after one"),
    (STORY.replace(" . Now Mia has three", " . Then Mia has three"), "grammar"),
    (STORY.replace("The sky is calm", "The sky is apples"), "a word from the wrong slot"),
    (" Tom finds", "someone else's story"),
])
def test_story_checker_rejects_inconsistent_stories(broken, why):
    assert TASKS["story"].score(Example(STORY_PROMPT, STORY), broken)["consistent"] is False, why


def test_story_prompts_and_targets():
    task = TASKS["story"]
    for ex in task.examples("train", 200):
        assert re.fullmatch(r"Story: \w+ has \w+ \w+ \w+ \.", ex.prompt)
        assert len(ex.target.split()) >= 160  # longer than any canvas: cut where the canvas ends
        assert task.score(ex, "")["consistent"] is False


# keys whose split is pinned: a change of the split rule (another hash, another percent, the key
# built differently) moves held-out items into training, and these literals catch it
PINNED_SPLIT = [
    ("story|Story: Dan has five blue pens .", True),  # crc32 % 100 == 2: the first held-out story
    ("arithmetic|Q: 5+6-9+7-3+2+2=? A:", True),  # crc32 % 100 == 3
    ("copy|Copy: i q z v o k y l. A:", True),  # crc32 % 100 == 0
    ("story|Story: Mia has two red apples .", False),  # crc32 % 100 == 10: just outside the 10%
    ("arithmetic|Q: 7+5-3+8=? A:", False),  # crc32 % 100 == 20
]


def test_split_rule_is_stable():
    # the split is a pure function of the problem text: a fixed list, never a seed
    for key, heldout in PINNED_SPLIT:
        assert is_heldout(key) is heldout, key
    # the rule, computed by hand from CRC-32 (an independent oracle for any key and percent)
    keys = [f"k{i}" for i in range(200)] + [key for key, _ in PINNED_SPLIT] + ["", "é|ünïcode"]
    for key in keys:
        for percent in (5, 10, 11, 50):
            assert is_heldout(key, percent) == (zlib.crc32(key.encode("utf-8")) % 100 < percent), (key, percent)
    assert is_heldout("story|Story: Mia has two red apples .", percent=11) is True  # the boundary: 10 < 11
    share = sum(is_heldout(f"k{i}") for i in range(5000)) / 5000
    assert 0.07 < share < 0.13


@pytest.mark.parametrize("name", list(TASKS))
def test_a_prompt_typed_in_a_task_format_is_found_and_scored(name):
    """example_for finds the task of any of its prompts (both splits) and rebuilds the example,
    so the app can score a run on a prompt typed by hand; other prompts are not scored."""
    task = TASKS[name]
    for split in SPLITS:
        for ex in task.examples(split, 50, seed=5):
            found_task, found = example_for(ex.prompt)
            assert found_task is task
            assert task.correct(found, ex.target)
            if name != "story":  # a story has no single target: the checker scores it
                assert (found.target, found.meta) == (ex.target, ex.meta)
    assert not task.correct(task.parse(ex.prompt), " no.")


@pytest.mark.parametrize("prompt", ["", "hello", "Q: 7+5=? A: 12", "Copy: A B. A:", "Story: Zed has two red apples .",
                                    "Story: Mia has two red dragons ."])
def test_other_prompts_belong_to_no_task(prompt):
    assert example_for(prompt) is None
