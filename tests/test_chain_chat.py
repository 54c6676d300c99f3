"""Issue 27's task data: chains of 1 to 10 operations on a canvas that holds the longest, the
held-out split by prompt hash (stable, disjoint, shared by a problem's chat form), and the
chat template the embedded tokenizer renders the tasks' questions in."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from slowfast.models.loading import EMBEDDED_DIR, load_tokenizer
from slowfast.tasks import TASKS, is_heldout
from slowfast.tasks.chat import CHAT_TASKS, CHAT_TEMPLATE, ChatTask, chat_tasks, question, render
from slowfast.tasks.registry import task_set

V3 = task_set("v3")  # the next embedded model's tasks: chains of 1 to 10 operations


@pytest.fixture(scope="module")
def tok():
    t = load_tokenizer(Path(EMBEDDED_DIR))
    t.chat_template = CHAT_TEMPLATE
    return t


def test_chains_of_every_length_from_1_to_10_in_both_splits():
    task = V3["arithmetic"]
    for split in ("train", "heldout"):
        counts = {len(ex.meta["ops"]) for ex in task.examples(split, 300)}
        assert counts == set(range(1, 11)), split
    one = task.parse("Q: 9-4=? A:")
    assert one.target == " 9-4=05. The answer is 05." and one.meta["answer"] == 5
    ten = task.parse("Q: 1+2+3+4+5+6-7-8+9-9+1=? A:")
    assert ten.target.count("=") == 10 and ten.meta["answer"] == 7


def test_heldout_split_is_stable_and_disjoint():
    task = V3["arithmetic"]
    heldout = task.examples("heldout", 200)
    train = task.examples("train", 2000)
    assert [ex.prompt for ex in heldout] == [ex.prompt for ex in task.examples("heldout", 200)]
    assert not {ex.prompt for ex in heldout} & {ex.prompt for ex in train}
    assert all(is_heldout(f"arithmetic|{ex.prompt}") for ex in heldout)
    assert not any(is_heldout(f"arithmetic|{ex.prompt}") for ex in train)
    # the old chains' split did not move: a pinned held-out chain of 6 operations is still held out
    assert task.split_of(task.parse("Q: 5+6-9+7-3+2+2=? A:")) == "heldout"


def test_the_longest_chain_fits_the_canvas_with_end_of_text(tok):
    task = V3["arithmetic"]
    rng = random.Random(0)
    longest = max(len(tok(task.sample(rng).target)["input_ids"]) for _ in range(300))
    ten = task.parse("Q: 9" + "-1+1" * 5 + "=? A:")  # 10 operations
    assert len(ten.meta["ops"]) == 10
    assert max(longest, len(tok(ten.target)["input_ids"])) < task.gen_length


@pytest.mark.parametrize("name", sorted(CHAT_TASKS))
def test_chat_forms_share_the_base_split_and_answer(name):
    chat = CHAT_TASKS[name]
    base = chat.base
    for split in ("train", "heldout"):
        for ex in chat.examples(split, 40):
            base_ex = base.parse(ex.meta["base_prompt"])
            assert base.split_of(base_ex) == split == chat.split_of(ex)
            assert chat.parse(ex.prompt).meta["base_prompt"] == ex.meta["base_prompt"]
            if base.name != "story":  # a story has many right continuations, the checker scores them
                assert chat.correct(ex, ex.target) and base_ex.target == ex.target


def test_questions_read_as_a_newcomer_types_them():
    assert question("arithmetic", "Q: 7+5-3=? A:") == "What is 7+5-3?"
    assert question("story", "Story: Mia has two red apples .") == "Tell me a story about Mia and her two red apples."
    assert question("story", "Story: Tom has one blue pen .") == "Tell me a story about Tom and his one blue pen."
    assert question("copy", "Copy: c f a k e q x z. A:") == "Copy: c f a k e q x z"
    ex = CHAT_TASKS["chat-arithmetic"].parse("What is 7+5-3?")
    assert ex.target == " 7+5=12, 12-3=09. The answer is 09."
    assert CHAT_TASKS["chat-arithmetic"].parse("What is the time?") is None
    # in training a share of the chat problems asks the task's own prompt inside the template
    raw = [ex for ex in chat_tasks(raw_share=0.5)["chat-copy"].examples("train", 60) if ex.prompt.endswith("A:")]
    assert 10 < len(raw) < 50


def test_template_renders_a_conversation(tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 7+5?"},
            {"role": "assistant", "content": " 7+5=12. The answer is 12."}, {"role": "user", "content": "Copy: a b"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == render(msgs) == ("System: Be brief.\nUser: What is 7+5?\n"
                                    "Assistant: 7+5=12. The answer is 12.<|endoftext|>\nUser: Copy: a b\nAssistant:")
    assert tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=False) == render(msgs[:2], False)
    # no new tokens: the rendered text round-trips through the tokenizer as it is
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and max(ids) < len(tok)


def test_training_feeds_the_prompt_as_the_engine_does(tok):
    import torch

    from slowfast.commands.train.data import Data
    from slowfast.models.loading import DLLM

    data = Data(tok)
    model = DLLM("t", torch.nn.Identity(), tok, data.mask, frozenset({data.eos}))
    task = CHAT_TASKS["chat-arithmetic"]
    for ex in task.examples("heldout", 5):
        assert data.prompt_ids(task, ex) == model.encode_prompt(ex.prompt, chat=True)
    plain = V3["arithmetic"].examples("heldout", 1)[0]
    assert data.prompt_ids(V3["arithmetic"], plain) == model.encode_prompt(plain.prompt, chat=False)


def test_shipped_chat_template_when_present_is_the_documented_one():
    config = json.loads((Path(EMBEDDED_DIR) / "tokenizer_config.json").read_text())
    assert config.get("chat_template", CHAT_TEMPLATE) == CHAT_TEMPLATE


def test_selection_score_is_graded_per_task_and_per_operation_count():
    from slowfast.commands.train.evals import selection_score, task_accuracy

    chain = {"answer_correct": 0.9, "by_ops": {"1": [1.0, 10], "10": [0.5, 10]}}
    assert task_accuracy("arithmetic", chain) == pytest.approx(0.75)
    full = {"story": {"consistent": 0.9}, "arithmetic": {"answer_correct": 1.0}, "copy": {"exact_match": 1.0}}
    assert selection_score(full) == pytest.approx(1.0)
    worse = {**full, "arithmetic": chain}
    assert selection_score(worse) == pytest.approx((1 + 0.75 / 0.95 + 1) / 3)
    assert ChatTask(TASKS["copy"]).name == "chat-copy"


def test_task_sets_share_the_split_and_differ_only_in_the_chain():
    v2 = task_set("v2")
    assert TASKS.keys() == v2.keys() == V3.keys()
    assert {len(ex.meta["ops"]) for ex in v2["arithmetic"].examples("heldout", 100)} == {4, 5, 6}
    assert (v2["arithmetic"].gen_length, V3["arithmetic"].gen_length) == (64, 104)
    chain = "Q: 5+6-9+7-3+2+2=? A:"  # held out in both sets: the split is the prompt's hash
    assert v2["arithmetic"].split_of(v2["arithmetic"].parse(chain)) == "heldout"
    assert V3["arithmetic"].split_of(V3["arithmetic"].parse(chain)) == "heldout"
    with pytest.raises(ValueError, match="task set"):
        task_set("v9")
    from slowfast.tasks.arithmetic import Arithmetic

    with pytest.raises(ValueError, match="operations"):
        Arithmetic(min_ops=0)


def test_eval_command_reports_chains_by_operations(tmp_path, capsys):
    """--task-set v3 scores the v3 chains; --baseline-only leaves SlowFast out; the report has the
    per-operation-count table and the chains of >= 7 operations."""
    from slowfast.commands.evaluate.command import main

    out = tmp_path / "e.json"
    assert main(["--tasks", "arithmetic,chat-copy", "--task-set", "v3", "--n", "3", "--slider-task", "",
                 "--baseline-only", "chat-copy", "--json", str(out)]) == 0
    md = capsys.readouterr().out
    assert "| arithmetic | 3 | 104 |" in md and "`arithmetic` by number of operations" in md
    assert "| chat-copy | 3 | 16 | exact_match |" in md and "not run" in md
    reports = json.loads(out.read_text())
    chain = reports[0]
    assert sum(row["n"] for row in chain["by_ops"].values()) == 3
    assert reports[1]["baseline_only"] is True and not reports[1]["by_ops"]
    assert main(["--tasks", "arithmetic", "--baseline-only", "copy"]) != 0  # not one of --tasks
    capsys.readouterr()
    assert main(["--tasks", "copy", "--n", "2", "--slider-task", "", "--baseline-only", "copy"]) == 0
    assert "threshold sampler" not in capsys.readouterr().out  # nothing to compare: no empty table


CHAT_SAMPLE = 5  # held-out questions per chat task asked through the app's chat handler
# right of those 5 (measured: 5, 5 and 5; the card's 100 per task: 89%, 88%, 100%); one below,
# for other CPUs' rounding
CHAT_FLOOR = {"chat-arithmetic": 4, "chat-story": 4, "chat-copy": 4}


@pytest.mark.parametrize("name", sorted(CHAT_FLOOR))
def test_the_app_chats_with_the_embedded_model_offline(name):
    """The chat box on the embedded model (as ``/chat`` calls it): a held-out question of each
    task, in the template, answered and scored by its task's verdict; the page's first frame
    already holds the user's turn."""
    import dataclasses

    import app
    from slowfast.session import Controls
    from slowfast.tasks import verdict

    task = CHAT_TASKS[name]
    right = 0
    for ex in task.examples("heldout", CHAT_SAMPLE):
        state = {}
        c = dataclasses.replace(Controls(sampler="baseline"), gen_length=task.gen_length,
                                block_length=task.gen_length, steps=task.gen_length)
        frames = list(app.on_chat("embedded", ex.prompt, [], state, *[getattr(c, n) for n in app.CONTROL_NAMES]))
        history = frames[-1][-2]
        assert [m["role"] for m in history] == ["user", "assistant"] and history[0]["content"] == ex.prompt
        found = verdict(ex.prompt, history[1]["content"])
        assert found is not None and found.task == name
        assert found.correct == task.correct(ex, state["trace"].text)
        right += found.correct
    assert right >= CHAT_FLOOR[name], right


def test_a_second_chat_question_to_the_embedded_model_is_answered():
    """The embedded model was trained on single questions; fed a conversation in its template it
    answers an empty text. Its chat box feeds it the last question alone (the conversation is
    still shown whole), so the second question gets its own answer."""
    import dataclasses

    import app
    from slowfast.models import load_model
    from slowfast.session import Controls

    c = dataclasses.replace(Controls(sampler="baseline"), gen_length=104, block_length=104, steps=104)
    values = [getattr(c, n) for n in app.CONTROL_NAMES]
    state = {}
    first = list(app.on_chat("embedded", "What is 9-4+6?", [], state, *values))[-1][-2]
    assert first[1]["content"].strip() == "9-4=05, 05+6=11. The answer is 11."
    second = list(app.on_chat("embedded", "What is 2+3?", first, state, *values))[-1][-2]
    assert [m["role"] for m in second] == ["user", "assistant"] * 2
    assert second[3]["content"].strip() == "2+3=05. The answer is 05."
    model = load_model("embedded", device="cpu")
    assert state["trace"].prompt_ids == model.encode_chat([{"role": "user", "content": "What is 2+3?"}])
