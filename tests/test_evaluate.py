"""The statistics ``python -m slowfast eval`` reports, on hand-made inputs."""
import numpy as np
import pytest

from slowfast.engine import GenerationSettings, generate
from slowfast.commands.evaluate import cycles, has_parallel_fast_step, ranks, spearman


def test_ranks_share_ties():
    assert ranks(np.array([0.3, 0.1, 0.3, 0.2])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_spearman_is_rank_correlation():
    x = np.arange(6)
    assert spearman(x, np.array([9, 7, 5, 3, 2, 1])) == pytest.approx(-1.0)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)  # monotone, not linear
    assert spearman(x, np.ones(6)) is None and spearman(x[:2], x[:2]) is None
    # 1 - 6 * sum(d^2) / (n (n^2 - 1)) with d = (0, 1, -1, 1, -1, 0)
    assert spearman(x, np.array([1, 3, 2, 5, 4, 6])) == pytest.approx(1 - 6 * 4 / (6 * 35))


def test_cycles_and_parallel_fast_steps_read_the_trace(tiny_model):
    s = GenerationSettings(sampler="slowfast", gen_length=32, block_length=16, chat=False)
    trace = generate(tiny_model, "What is 7+5?", s)
    by_cycle = {(r.block, r.info["cycle"]) for r in trace.records}
    assert cycles(trace) == len(by_cycle) >= 2  # at least one cycle per block
    assert has_parallel_fast_step(trace) == any(r.stage == "fast" and len(r.decoded) > 1 for r in trace.records)


def test_count_events_find_each_change_its_noun_and_the_new_count():
    from slowfast.tasks.story import count_events

    words = ("At the park Mia finds two more red apples . Now Mia has four red apples . The sky is calm . "
             "Mia loses one red apple . Now Mia has three red apples . Mia meets Tom . Tom gives Mia one "
             "more red apple . Now Mia has").split()
    strings = [" " + w for w in words]
    found = count_events(strings)
    assert [(words[k], words[noun], words[n]) for k, noun, n in found] == [
        ("two", "apples", "four"), ("one", "apple", "three")]  # the last change has no new count yet


def test_count_inference_hides_the_counts_it_scores():
    from slowfast.commands.evaluate import count_inference
    from slowfast.models import load_model
    from slowfast.tasks import TASKS

    model = load_model("embedded", device="cpu")
    ci = count_inference(model, TASKS["story"], 8)
    assert ci["events"] >= 8 * 3  # about five changes per 96-token story
    # a later count from the change before it is what the model does best (measured 99%);
    # a hidden position it could not see, or a wrong target, would score near chance
    assert ci["forward"] >= 0.9 and 0.0 <= ci["backward"] <= 1.0


def test_step_inference_hides_the_results_it_scores():
    from slowfast.commands.evaluate import step_inference
    from slowfast.models import load_model
    from slowfast.tasks import TASKS

    model = load_model("embedded", device="cpu")
    si = step_inference(model, TASKS["arithmetic"], 8)
    assert si["steps"] >= 8 * 4  # four to six steps per chain
    # the shipped model computes most hidden steps (measured 79% or more); a hidden position it
    # could not see, or a wrong target, would score near chance (a tenth per digit)
    assert 0.6 <= si["computed"] <= 1.0


def made_up_run(model, prompt, text, first):
    """A run that wrote ``text``, one token per step: the positions in ``first`` before the rest."""
    from slowfast.trace import StepRecord, Trace

    ids = list(model.tokenizer(text)["input_ids"])
    order = list(first) + [p for p in range(len(ids)) if p not in first]
    records = [StepRecord(step=i, stage="baseline", block=0, span=None, horizons=None, horizon_spread=None,
                          confidence=np.zeros(len(ids), np.float16), argmax=np.zeros(len(ids), np.int32),
                          decoded=[p], fed_end=len(ids), tokens_fed=0, ms=0.0, nfe=i + 1, forwards=i + 1)
               for i, p in enumerate(order)]
    return Trace(settings={"gen_length": len(ids)}, model="embedded", prompt=prompt, prompt_ids=[], mask_id=1,
                 records=records, tokens=ids, text=model.decode(ids))


def test_a_failed_story_is_classified_by_what_was_written_first():
    from slowfast.commands.evaluate import FAILURE_KINDS, story_failure
    from slowfast.tasks.story import count_events
    from slowfast.models import load_model

    model = load_model("embedded", device="cpu")
    prompt = "Story: Mia has two red apples ."
    right = " Mia loses one red apple . Now Mia has one red apple . The sky is calm ."
    wrong = right.replace("has one", "has two").replace("has two red apple", "has two red apples")
    ids = list(model.tokenizer(wrong)["input_ids"])
    [(k, _, n)] = count_events(model.token_strings(ids))
    assert story_failure(model, prompt, made_up_run(model, prompt, right, [])) is None
    assert story_failure(model, prompt, made_up_run(model, prompt, wrong, [n])) == FAILURE_KINDS[0]
    assert story_failure(model, prompt, made_up_run(model, prompt, wrong, [k])) == FAILURE_KINDS[1]
    broken = " Mia loses one red apple . Then Mia has one red apple ."
    assert story_failure(model, prompt, made_up_run(model, prompt, broken, [])) == FAILURE_KINDS[2]
