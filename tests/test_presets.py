"""Presets and the app's default prompt on the embedded model. (That every preset file loads
into the app's controls is tests/test_app.py's.) Every preset with a prompt is answered
correctly (or, where it says so, wrongly) under its own settings, and each claim of its
``checks`` (what its explanation tells the user to look for) is true on that run."""
import numpy as np
import pytest

from slowfast.cache import CACHE_PRESETS
from slowfast.engine import first_end, generate
from slowfast.commands.evaluate import cycles, spearman, story_failure
from slowfast.models import load_model
from slowfast.session import DEFAULT_PROMPT, PRESETS_DIR, Controls, example_prompts, load_presets, preset_controls
from slowfast.tasks import TASKS, Example, verdict

PRESETS = load_presets(PRESETS_DIR)
WITH_PROMPT = [name for name, p in PRESETS.items() if p.get("prompt")]


def task_of(prompt: str):
    prefixes = {"Story:": "story", "Q:": "arithmetic", "Copy:": "copy"}
    return TASKS[next(t for pre, t in prefixes.items() if prompt.startswith(pre))]


@pytest.fixture(scope="module")
def embedded():
    return load_model("embedded", device="cpu")


def run(embedded, preset):
    controls = Controls(**{**{k: v for k, v in vars(Controls()).items()}, **preset_controls(preset)})
    return generate(embedded, preset["prompt"], controls.settings())


def with_changed(preset, claim: str, value: dict):
    """The preset with some sampler parameters (``correct_with``) or cache settings
    (``correct_with_cache``, over a cache preset's own when it names one) changed."""
    part = "params" if claim in ("correct_with", "wrong_with") else "cache"
    base = preset["settings"].get(part)
    if part == "cache":
        assert base, f"{claim}: the preset runs without the cache"
        base = CACHE_PRESETS[base] if isinstance(base, str) else base
    return dict(preset, settings={**preset["settings"], part: {**base, **value}})


def score(prompt: str, text: str) -> bool:
    task = task_of(prompt)
    if task.name == "story":
        from slowfast.tasks.story import check_story

        return check_story(prompt, text)[0]
    if task.name == "arithmetic":
        from slowfast.tasks.arithmetic import ANSWER_RE

        expr = prompt[len("Q: "):prompt.index("=")]
        found = ANSWER_RE.findall(text)
        return bool(found) and int(found[-1]) == eval(expr)  # noqa: S307 (digits and +- only)
    return text.strip() == prompt[len("Copy: "):-len(" A:")]


def verdict_step(embedded, prompt: str, trace) -> int:
    """The step that decoded the token where the run's verdict stops (its ``where``)."""
    found = verdict(prompt, trace.text)
    assert found is not None and found.where is not None, found
    strings = embedded.token_strings([int(t) for t in trace.tokens])
    assert "".join(strings).startswith(trace.text)
    ends = np.cumsum([len(s) for s in strings])
    return int(trace.decoded_at()[int(np.searchsorted(ends, found.where, side="right"))])


@pytest.mark.parametrize("name", WITH_PROMPT)
def test_preset_claims_hold_on_its_own_run(embedded, name):
    preset = PRESETS[name]
    trace = run(embedded, preset)
    checks = dict(preset.get("checks", {}))
    assert score(preset["prompt"], trace.text) is checks.pop("correct", True), trace.text
    answer = first_end(trace.tokens, embedded.eos_ids)
    first = len(trace.records[0].decoded) / answer
    for claim, value in checks.items():
        if claim == "cycles_at_least":
            assert cycles(trace) >= value
        elif claim == "cycles_at_most":
            assert cycles(trace) <= value
        elif claim == "forwards_at_least":
            assert len(trace.records) >= value
        elif claim == "forwards_at_most":
            assert len(trace.records) <= value
        elif claim == "verdict_reason":  # what the run view's verdict says at the end of the run
            assert verdict(preset["prompt"], trace.text).reason == value
        elif claim == "verdict_decoded_at_step":  # the step that wrote the token where the verdict stops
            assert verdict_step(embedded, preset["prompt"], trace) == value
        elif claim == "fast_forwards_at_most":
            assert sum(1 for r in trace.records if r.stage == "fast") <= value
        elif claim == "fast_step_decodes_at_least":
            assert max((len(r.decoded) for r in trace.records if r.stage == "fast"), default=0) >= value
        elif claim == "first_forward_decodes_share_at_least":
            assert first >= value
        elif claim == "first_forward_decodes_share_at_most":
            assert first <= value
        elif claim == "first_span_reaches_the_eos_tail":
            slow = [r for r in trace.records if r.stage == "slow" and r.info.get("cycle") == 1]
            assert (slow[0].span[1] > answer) is value
        elif claim == "first_forward_decodes_the_eos_tail":  # every end-of-text position after the answer
            tail = set(range(answer, len(trace.records[0].confidence)))
            assert (bool(tail) and tail <= set(trace.records[0].decoded)) is value
        elif claim == "first_forward_spearman_at_most":
            rho = spearman(np.arange(answer), trace.records[0].confidence[:answer].astype(np.float64))
            assert rho is not None and rho <= value
        elif claim == "idle_forwards_at_least":
            assert sum(1 for r in trace.records if not r.decoded) >= value
        elif claim == "story_failure":
            assert story_failure(embedded, preset["prompt"], trace) == value
        elif claim == "nfe_at_most":
            assert trace.summary["nfe"] <= value
        elif claim in ("correct_with", "correct_with_cache"):  # right under other parameters / cache settings
            assert score(preset["prompt"], run(embedded, with_changed(preset, claim, value)).text)
        elif claim == "wrong_with":  # wrong under other sampler parameters (e.g. the defaults)
            assert not score(preset["prompt"], run(embedded, with_changed(preset, claim, value)).text)
        else:
            raise AssertionError(f"preset {name}: unknown claim {claim!r}")


def test_the_app_default_prompt_is_answered_correctly(embedded):
    """As the page runs it: the embedded model's template checkbox starts off (plain prompts)."""
    trace = generate(embedded, DEFAULT_PROMPT, Controls(chat=False).settings())
    assert score(DEFAULT_PROMPT, trace.text), trace.text


def test_example_prompts_are_held_out_task_prompts():
    examples = example_prompts()
    assert len(examples) == 2 * len(TASKS)
    for prompt in examples.values():
        task = task_of(prompt)
        assert task.split_of(Example(prompt, "")) == "heldout"
