"""The task sets: seeded, with a fixed held-out split, and scorers that read answers right."""
from __future__ import annotations

import re

import pytest

from slowfast.tasks import TASKS, Example, heldout_prompts, is_heldout


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
        assert task.score(ex, ex.target)["exact_match"] is True


def test_heldout_prompts_convenience():
    prompts = heldout_prompts("arithmetic", 5)
    assert prompts == [ex.prompt for ex in TASKS["arithmetic"].examples("heldout", 5)]
    assert len(set(prompts)) == 5


def test_arithmetic_worked_steps_reuse_previous_result():
    for ex in TASKS["arithmetic"].examples("train", 300):
        operands = [int(d) for d in re.findall(r"\d", ex.prompt.split("=")[0])]
        assert len(operands) == 4 and all(1 <= d <= 9 for d in operands)
        steps = re.findall(r"(\d+)([+-])(\d+)=(\d+)", ex.target)
        assert len(steps) == 3
        value = operands[0]
        for (a, op, b, r) in steps:
            assert int(a) == value
            value = int(a) + int(b) if op == "+" else int(a) - int(b)
            assert int(r) == value and 10 <= value <= 19
        assert ex.target.endswith(f". The answer is {value}.") and ex.meta["answer"] == value


def test_arithmetic_layout_is_fixed():
    for ex in TASKS["arithmetic"].examples("train", 200):
        assert len(ex.prompt) == len("Q: 7+5-3+8=? A:")
        assert len(ex.target) == len(" 7+5=12, 12-3=11, 11+8=19. The answer is 19.")


def test_arithmetic_example_format():
    ex = Example("Q: 7+5-3+8=? A:", " 7+5=12, 12-3=9, 9+8=17. The answer is 17.", {"answer": 17})
    task = TASKS["arithmetic"]
    assert task.score(ex, " 7+5=12, 12-3=9, 9+8=17. The answer is 17.") == {
        "answer_correct": True, "exact_match": True}
    # right answer, wrong working: the answer counts, the line does not
    assert task.score(ex, " 7+5=11, 11-3=9, 9+8=17. The answer is 17.") == {
        "answer_correct": True, "exact_match": False}
    assert task.score(ex, " 7+5=12, 12-3=9, 9+8=17. The answer is 18.")["answer_correct"] is False
    assert task.score(ex, " 7+5=12, 12-3=9, 9+8=17.")["answer_correct"] is False
    assert task.score(ex, "")["answer_correct"] is False
    # surrounding whitespace is not an error
    assert task.score(ex, "7+5=12, 12-3=9, 9+8=17. The answer is 17.  ")["exact_match"] is True


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


def test_prose_split_and_score():
    from slowfast.tasks import prose

    held, train = prose.texts("heldout"), prose.texts("train")
    assert held and train and not set(held) & set(train)
    ex = TASKS["prose"].examples("heldout", 1)[0]
    assert ex.target.strip() in next(p for p in held if ex.prompt in p)
    half = " ".join(ex.target.split()[: len(ex.target.split()) // 2])
    score = TASKS["prose"].score(ex, half)
    assert 0 < score["word_accuracy"] < 1 and score["exact_match"] is False


def test_split_rule_is_stable():
    # the split is a pure function of the problem text: a fixed list, never a seed
    assert is_heldout("arithmetic|Q: 7+5-3+8=? A:") == is_heldout("arithmetic|Q: 7+5-3+8=? A:")
    share = sum(is_heldout(f"k{i}") for i in range(5000)) / 5000
    assert 0.07 < share < 0.13
