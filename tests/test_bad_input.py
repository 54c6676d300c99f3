"""Bad input: a ValueError naming the parameter, its value and what is allowed."""
import pytest

from slowfast.engine import GenerationSettings, Run

BAD = [
    (dict(gen_length=60, block_length=32), "gen_length: 60.*block_length 32"),
    (dict(sampler="baseline", gen_length=64, block_length=32, steps=63), "steps: 63.*multiple.*2"),
    (dict(sampler="baseline", gen_length=64, block_length=8, steps=128), "steps: 128.*at most 64"),
    (dict(params={"high_confidence_threshold": 1.5}), r"high_confidence_threshold: 1.5.*\[0, 1\]"),
    (dict(params={"horizon_threshold": -0.1}), r"horizon_threshold: -0.1.*\[0, 1\]"),
    (dict(sampler="threshold", params={"threshold": 2}), r"threshold: 2.*\[0, 1\]"),
    (dict(params={"stability_window": 0}), "stability_window: 0.*>= 1"),
    (dict(params={"exploration_steps": 0}), "exploration_steps: 0.*>= 1"),
    (dict(params={"variant": "fancy"}), "variant: 'fancy'.*reference, paper"),
    (dict(sampler="magic"), "sampler: 'magic'.*baseline, slowfast, threshold"),
    (dict(params={"bogus": 1}), "bogus: unknown parameter.*exploration_steps"),
    (dict(sampler="baseline", params={"threshold": 0.5}), "threshold: unknown parameter.*remasking"),
    (dict(temperature=-1.0), "temperature: -1.0"),
    (dict(gen_length=0), "gen_length: 0"),
    (dict(sampler="threshold", params={"factor": 0}), "factor: 0"),
]


@pytest.mark.parametrize("fields, message", BAD)
def test_bad_settings_raise_a_value_error_naming_the_parameter(tiny_model, fields, message):
    with pytest.raises(ValueError, match=message):
        Run(tiny_model, "hello", GenerationSettings(**fields))


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt(tiny_model, prompt):
    with pytest.raises(ValueError, match="prompt: empty"):
        Run(tiny_model, prompt, GenerationSettings())


def test_prompt_plus_gen_length_beyond_the_context(tiny_model):
    context = tiny_model.max_length
    with pytest.raises(ValueError, match=f"exceeds the model's context of {context}"):
        Run(tiny_model, "hello", GenerationSettings(gen_length=context, block_length=context))
