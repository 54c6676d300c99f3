"""visuals/explain.py says only what happened: for every step of every preset's run and of 200
random runs of the tiny checkpoint (finished, stopped, ended by a cap, or still being decoded),
the "What you are seeing" text

(a) never calls a position masked that is decoded (as of this step; "when this forward ran":
    before this forward decoded);
(b) never names a fast stage, a slow stage, the next cycle or the next block that the trace does
    not hold (conditional sentences, "if ...", and negations, "no fast stage", excepted);
(c) prints only inequalities that hold for the printed numbers.

The checks read the Markdown the app shows, so they hold for any wording."""
import dataclasses
import operator
import random
import re

import numpy as np
import pytest

from slowfast.engine import GenerationSettings, generate
from slowfast.models import load_model
from slowfast.models.tiny import write_tiny_dream_checkpoint
from slowfast.samplers.slowfast import SlowFastInfo
from slowfast.session import DEFAULT_PROMPT, PRESETS_DIR, Controls, load_presets, preset_controls
from visuals import explain_step
from visuals.explain import explain_sentences
from visuals.view import TraceView

PRESETS = load_presets(PRESETS_DIR)
DREAM_PRESETS = [name for name, p in PRESETS.items() if p["settings"].get("params", {}).get("variant") == "dream"]
OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
POSITIONS = re.compile(r"\bpositions? (\d+(?:(?:, |,? and )\d+)*)", re.I)
INEQUALITY = re.compile(r"(-?\d+(?:\.\d+)?)\s*(<=|>=|<|>)\s*(-?\d+(?:\.\d+)?)")
CONDITIONAL = re.compile(r"\b(if|no|not|never|without|before|unless|while)\b", re.I)


# --- reading the text ---------------------------------------------------------------------------------------
def body(markdown: str) -> list[str]:
    """The explanation's paragraphs (no heading, no fold-out), bold marks and code spans (token
    text) taken out."""
    text = markdown.split("<details>")[0]
    paragraphs = [p for p in text.split("\n\n") if p.strip() and not p.startswith("#")]
    return [re.sub(r"`[^`]*`", "`x`", p.replace("**", "")) for p in paragraphs]


def sentences(paragraph: str) -> list[str]:
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", paragraph.strip())


def named_positions(sentence: str) -> list[int]:
    return [int(n) for m in POSITIONS.finditer(sentence) for n in re.findall(r"\d+", m.group(1))]


def masked_claims(markdown: str):
    """(position, sentence, when) for every position a sentence calls masked: when = "before"
    (the sentence speaks of when this forward ran) or "after" (as of this step). A sentence
    that starts with "It"/"They" speaks of the positions the one before it named."""
    for paragraph in body(markdown):
        previous: list[int] = []
        for sentence in sentences(paragraph):
            named = named_positions(sentence)
            if not named and re.match(r"(It|They)\b", sentence):
                named = previous
            if named and re.search(r"(?<!un)masked", sentence):
                when = "before" if "when this forward ran" in sentence else "after"
                for p in named:
                    yield p, sentence, when
            previous = named or previous


def stage_claims(markdown: str):
    """(what, sentence) for every unconditional sentence naming a stage, cycle or block."""
    for paragraph in body(markdown):
        for sentence in sentences(paragraph):
            if CONDITIONAL.search(sentence):
                continue
            if re.search(r"\b(the|a) fast stage\b", sentence, re.I):
                yield "fast", sentence
            if re.search(r"\bthe slow stage\b", sentence, re.I):
                yield "slow", sentence
            if re.search(r"\bthe next cycle\b", sentence, re.I):
                yield "next cycle", sentence
            if re.search(r"\bthe next block\b", sentence, re.I):
                yield "next block", sentence


def check_step(trace, step: int, text=None) -> None:
    text = explain_step(trace, step) if text is None else text
    assert f"step {step} of {len(trace.records) - 1}" in text
    view = TraceView(trace, step)
    decoded_at = view.decoded_at  # as of this step; -1: still masked
    for p, sentence, when in masked_claims(text):
        assert 0 <= p < view.gen_length, (step, sentence)
        masked = decoded_at[p] < 0 or (when == "before" and decoded_at[p] == step)
        assert masked, f"step {step}: position {p} is decoded (at step {decoded_at[p]}), but: {sentence}"
    record = trace.records[step]
    block, cycle = int(record.block), _cycle(record)
    keys = {(int(r.block), _cycle(r), r.stage) for r in trace.records}
    held = {
        "fast": (block, cycle, "fast") in keys if cycle is not None else False,
        "slow": (block, cycle, "slow") in keys if cycle is not None else False,
        "next cycle": cycle is not None and any(k[:2] == (block, cycle + 1) for k in keys),
        "next block": any(k[0] == block + 1 for k in keys),
    }
    for what, sentence in stage_claims(text):
        assert held[what], f"step {step}: the trace holds no {what} for block {block}, cycle {cycle}: {sentence}"
    for paragraph in body(text):
        for a, op, b in INEQUALITY.findall(paragraph):
            assert OPS[op](float(a), float(b)), f"step {step}: {a} {op} {b} is false: {paragraph}"


def _cycle(record):
    info = SlowFastInfo.of(record)
    return None if info is None else info.cycle


def check_trace(trace) -> None:
    for step in range(len(trace.records)):
        check_step(trace, step)


def live(trace, n: int):
    """The trace as the app shows it while the run is still going, after ``n`` records."""
    summary = dict(trace.summary, finished=False, stopped=False, error=None)
    return dataclasses.replace(trace, records=trace.records[:n], summary=summary)


# --- every preset -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded():
    return load_model("embedded", device="cpu")


@pytest.fixture(scope="module")
def tiny_dream(tmp_path_factory):
    return load_model(str(write_tiny_dream_checkpoint(tmp_path_factory.mktemp("tiny-dream"))), device="cpu")


def run_preset(model, preset):
    controls = Controls(**{**vars(Controls()), **preset_controls(preset)})
    settings = controls.settings()
    try:
        settings.policy()
    except ValueError as exc:
        pytest.skip(f"{preset['name']} cannot run on {model.name}: {exc}")
    return generate(model, preset.get("prompt") or DEFAULT_PROMPT, settings)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_step_of_every_preset_on_the_embedded_model(embedded, name):
    trace = run_preset(embedded, PRESETS[name])
    assert trace.records and trace.summary["finished"]
    check_trace(trace)
    check_trace(live(trace, len(trace.records) // 2))


@pytest.mark.parametrize("name", DREAM_PRESETS)
def test_every_step_of_the_dream_variant_presets_on_a_tiny_dream_checkpoint(tiny_dream, name):
    check_trace(run_preset(tiny_dream, PRESETS[name]))


# --- random settings -------------------------------------------------------------------------------------------------
PROMPTS = ["Hi", "What is 2+2?", "Story: Ivy has three blue keys .", "Copy: a b c. A:"]


def threshold(rng: random.Random) -> float:
    """Low ones (the tiny model is unsure), round ones (ties with a measured value) and any."""
    return rng.choice([round(rng.uniform(0.0, 0.15), 3), rng.choice([0.05, 0.1, 0.25, 0.5, 0.9]),
                       rng.uniform(0.0, 1.0)])


def random_settings(rng: random.Random) -> GenerationSettings:
    sampler = rng.choice(["baseline", "slowfast", "threshold"])
    block_length = rng.choice([4, 8, 16])
    blocks = rng.randint(1, min(3, 32 // block_length))
    params: dict = {}
    steps = 16
    if sampler == "baseline":
        steps = rng.randint(1, block_length) * blocks
        params = dict(remasking=rng.choice(["low_confidence", "random"]))
    elif sampler == "slowfast":
        variant = rng.choice(["reference", "reference", "paper", "dream"])
        if variant == "dream":
            blocks = 1
        params = dict(variant=variant, exploration_steps=rng.randint(1, 6), horizon_threshold=threshold(rng),
                      stability_window=rng.randint(1, 3),
                      std_threshold=rng.choice([0.0, 0.5, 1.0, 2.0, round(rng.uniform(0, 3), 2)]),
                      high_confidence_threshold=threshold(rng), stop_when_full=rng.random() < 0.3)
        if rng.random() < 0.2:
            params["slow_confidence_threshold"] = threshold(rng)
        if rng.random() < 0.15:
            params["max_cycles"] = rng.randint(1, 3)  # a run the cycle cap ends
    else:
        params = dict(threshold=threshold(rng))
        if rng.random() < 0.3:
            params["factor"] = round(rng.uniform(0.2, 3.0), 2)
    cache = rng.choice([None, None, {}, dict(kp=rng.randint(1, 8), kr=rng.randint(1, 4), rho=rng.random())])
    return GenerationSettings(
        sampler=sampler, gen_length=block_length * blocks, block_length=block_length, steps=steps,
        temperature=rng.choice([0.0, 0.0, 0.7]), seed=rng.randint(0, 1000), params=params, cache=cache,
        max_forwards_per_block=rng.choice([None] * 6 + [rng.randint(1, 4)]))


def test_every_step_of_200_random_runs_of_the_tiny_checkpoint(tiny_model):
    rng = random.Random(20260101)
    runs = 0
    while runs < 200:
        settings = random_settings(rng)
        try:
            settings.policy()
        except ValueError:
            continue
        trace = generate(tiny_model, rng.choice(PROMPTS), settings)
        runs += 1
        check_trace(trace)
        if len(trace.records) > 1:  # the same run while it is still being decoded
            n = rng.randint(1, len(trace.records) - 1)
            check_trace(live(trace, n))
            stopped = dataclasses.replace(live(trace, n), summary=dict(trace.summary, finished=False,
                                                                       stopped=True, error=None))
            check_trace(stopped)


def hand_trace():
    """Block 0 of 8 positions fully decoded by the first slow forward; the second decodes nothing."""
    from slowfast.trace import StepRecord, Trace

    def rec(step, horizons, decoded, frozen):
        return StepRecord(step=step, stage="slow", block=0, span=(0, 1), horizons=horizons, horizon_spread=0.0,
                          confidence=np.full(8, 0.5, np.float16), argmax=np.arange(8, dtype=np.int32),
                          decoded=decoded, fed_end=8, tokens_fed=10, ms=1.0, nfe=step + 1, forwards=step + 1,
                          info=dict(cycle=1, estimate=1, frozen=frozen))

    params = dict(variant="reference", exploration_steps=2, horizon_threshold=0.3, stability_window=2,
                  std_threshold=1.0, high_confidence_threshold=0.9)
    return Trace(settings=dict(sampler="slowfast", gen_length=8, block_length=8, params=params), model="m",
                 prompt="p", prompt_ids=[1], mask_id=99, records=[rec(0, [1], list(range(8)), False),
                                                                  rec(1, [1, 1], [], True)],
                 tokens=list(range(8)), summary=dict(finished=True))


@pytest.mark.parametrize("old,words", [
    # what the old text said at a step like the chain preset's step 3, the story's step 5
    ("**Horizon estimate: position 1.** It is the farthest position after the span start (0), still masked when "
     "this forward ran, whose certainty reaches the horizon threshold 0.3.", "position 1 is decoded"),
    ("**Converged:** the last 2 estimates [1, 1] have a standard deviation of 0.00 < 1 (or the slow stage used "
     "all its forwards), so the span is frozen at [0, 1); the fast stage will decode it.", "holds no fast"),
    ("**Converged:** the last 2 estimates [36, 34] have a standard deviation of 1.00 < 1.", "1.00 < 1 is false"),
])
def test_the_checks_catch_what_the_old_text_said(old, words):
    trace = hand_trace()
    with pytest.raises(AssertionError, match=re.escape(words)):
        check_step(trace, 1, f"### What you are seeing: step 1 of 1\n\n{old}")
    check_step(trace, 1)  # what it says now
    text = explain_step(trace, 1)
    assert "The block is full: 8/8 decoded; this forward decodes nothing." in text and "fast stage will" not in text
    assert all(sentence in text for sentence in explain_sentences(trace, 1))
