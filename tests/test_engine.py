"""The engine end to end on the tiny random-weight checkpoint."""
import numpy as np
import pytest
import torch

from slowfast.engine import GenerationSettings, Run, confidences, first_end, generate
from slowfast.samplers import DecodingStalled
from slowfast.trace import Trace

PROMPT = "What is 2+2?"
SETTINGS = {
    "baseline": GenerationSettings(sampler="baseline", gen_length=64, block_length=32, steps=64),
    "slowfast": GenerationSettings(sampler="slowfast", gen_length=64, block_length=32),
    "threshold": GenerationSettings(sampler="threshold", gen_length=64, block_length=32, params={"threshold": 0.7}),
}


def canvas_before(trace, step):
    """The generated canvas as the model saw it at ``step`` (rebuilt from the records)."""
    tokens = np.full(trace.gen_length, trace.mask_id, dtype=np.int64)
    for r in trace.records[:step]:
        tokens[r.decoded] = r.argmax[r.decoded]
    return tokens


def without_timing(d):
    d = dict(d)
    d["summary"] = {k: v for k, v in d["summary"].items() if k not in ("seconds", "tokens_per_second")}
    d["records"] = [{k: v for k, v in r.items() if k != "ms"} for r in d["records"]]
    return d


@pytest.mark.parametrize("sampler", list(SETTINGS))
def test_each_sampler_decodes_every_position_once(tiny_model, sampler):
    trace = generate(tiny_model, PROMPT, SETTINGS[sampler])
    decoded = [i for r in trace.records for i in r.decoded]
    assert sorted(decoded) == list(range(64))
    assert trace.summary["finished"] and trace.summary["nfe"] == len(trace.records)
    assert [r.nfe for r in trace.records] == list(range(1, len(trace.records) + 1))
    assert trace.tokens == canvas_before(trace, len(trace.records)).tolist()
    assert trace.summary["tokens_fed"] == sum(len(trace.prompt_ids) + r.fed_end for r in trace.records)
    stages = {"baseline": {"baseline"}, "slowfast": {"slow", "fast"}, "threshold": {"threshold"}}[sampler]
    assert {r.stage for r in trace.records} <= stages
    assert trace.text == tiny_model.decode(trace.tokens[: first_end(trace.tokens, tiny_model.eos_ids)])
    if sampler == "baseline":
        assert trace.summary["nfe"] == 64


def test_slowfast_truncated_forwards_match_the_model_and_reuse_the_tail(tiny_model):
    trace = generate(tiny_model, PROMPT, SETTINGS["slowfast"])
    assert {"slow", "fast"} <= {r.stage for r in trace.records}
    truncated = [r for r in trace.records if r.fed_end < 64]
    assert truncated, "the tiny model should produce fast stages with truncated forwards"
    P = len(trace.prompt_ids)
    for r in truncated:
        prev = trace.records[r.step - 1]
        assert r.stage == "fast" and r.fed_end == r.span[1]
        assert max(r.decoded) < r.span[1] and min(r.decoded) >= r.span[0]
        canvas = torch.tensor([trace.prompt_ids + canvas_before(trace, r.step)[: r.fed_end].tolist()])
        conf, token = confidences(tiny_model.forward(canvas)[0, P:], 0.0, None)
        assert np.array_equal(r.argmax[: r.fed_end], token.numpy())
        assert np.allclose(r.confidence[: r.fed_end].astype(np.float32), conf.numpy(), atol=1e-3)
        # positions cut off the input carry the last full forward's predictions
        assert np.array_equal(r.confidence[r.fed_end:], prev.confidence[r.fed_end:])
        assert r.tokens_fed == P + r.fed_end
    assert trace.summary["tokens_fed"] < len(trace.records) * (P + 64)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_same_settings_and_seed_give_an_identical_trace(tiny_model, temperature):
    s = GenerationSettings(sampler="slowfast", gen_length=64, block_length=32, temperature=temperature, seed=7)
    a, b = generate(tiny_model, PROMPT, s), generate(tiny_model, PROMPT, s)
    assert without_timing(a.to_dict()) == without_timing(b.to_dict())


def test_temperature_sampling_depends_on_the_seed(tiny_model):
    runs = [generate(tiny_model, PROMPT, GenerationSettings(sampler="baseline", gen_length=32, block_length=32,
                                                              steps=32, temperature=1.0, seed=s)) for s in (1, 2)]
    assert runs[0].tokens != runs[1].tokens


def test_cfg_runs_two_forwards_per_step(tiny_model):
    s = GenerationSettings(sampler="baseline", gen_length=32, block_length=32, steps=16, cfg_scale=1.5)
    trace = generate(tiny_model, PROMPT, s)
    assert trace.summary["nfe"] == 16 and trace.summary["forwards"] == 32
    plain = generate(tiny_model, PROMPT, GenerationSettings(sampler="baseline", gen_length=32, block_length=32,
                                                            steps=16))
    assert not np.array_equal(trace.records[0].confidence, plain.records[0].confidence)


def test_stop_ends_the_run_within_one_step_and_keeps_the_trace(tiny_model):
    run = Run(tiny_model, PROMPT, SETTINGS["baseline"])
    for record in run:
        if record.step == 2:
            run.stop()
    trace = run.trace
    assert len(trace.records) == 3 and trace.summary["stopped"] and not trace.summary["finished"]
    assert trace.tokens.count(tiny_model.mask_id) == 64 - 3


def test_forward_cap_ends_the_run_with_a_clear_message(tiny_model):
    s = GenerationSettings(sampler="baseline", gen_length=32, block_length=32, steps=32, max_forwards_per_block=5)
    run = Run(tiny_model, PROMPT, s)
    with pytest.raises(DecodingStalled, match="used 5 forwards"):
        for _ in run:
            pass
    assert len(run.trace.records) == 5 and "used 5 forwards" in run.trace.summary["error"]


@pytest.mark.parametrize("bad, message", [
    (dict(seed=2**64), "seed: 18446744073709551616 is not allowed; it must be an integer in 0..9223372036854775807"),
    (dict(seed=-1), "seed: -1"),
    (dict(sampler="threshold", params={"factor": True}), "factor: True is not allowed"),
    (dict(sampler="threshold", params={"factor": float("nan")}), "factor: nan is not allowed"),
])
def test_bad_settings_name_the_parameter(bad, message):
    with pytest.raises(ValueError, match=message.replace(".", "[.]").replace("(", "[(]")):
        GenerationSettings(**{**dict(gen_length=32, block_length=32, steps=32), **bad}).policy()


def test_bad_prompts_name_the_problem(tiny_model):
    s = GenerationSettings(sampler="baseline", gen_length=32, block_length=32, steps=32)
    with pytest.raises(ValueError, match="token id 99999 is outside the vocabulary"):
        Run(tiny_model, [5, 99999], s)
    with pytest.raises(ValueError, match="token id -1 is outside"):
        Run(tiny_model, [-1], s)
    with pytest.raises(ValueError, match="prompt: not valid text"):
        Run(tiny_model, "caf\udce9", s)
    with pytest.raises(ValueError, match="prompt: 600 tokens leave no room"):
        Run(tiny_model, [5] * 600, s)


def test_trace_round_trips_exactly(tiny_model, tmp_path):
    trace = generate(tiny_model, PROMPT, SETTINGS["slowfast"])
    loaded = Trace.load(trace.save(tmp_path / "t.json"))
    assert loaded.to_dict() == trace.to_dict()
    r = loaded.records[0]
    assert r.confidence.dtype == np.float16 and r.argmax.dtype == np.int32 and r.confidence.shape == (64,)
    assert np.array_equal(loaded.decoded_at(), trace.decoded_at())


def test_trace_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="format"):
        Trace.load(tmp_path / "x.json")


def test_text_is_cut_at_the_first_end_token():
    assert first_end([5, 6, 3, 7, 0], frozenset({0, 3})) == 2
    assert first_end([5, 6], frozenset({0})) == 2


def test_settings_and_resolved_params_are_recorded(tiny_model):
    s = GenerationSettings(sampler="slowfast", gen_length=32, block_length=32, params={"k_exploration_steps": 3})
    trace = generate(tiny_model, PROMPT, s)
    assert trace.settings["params"]["exploration_steps"] == 3
    assert trace.settings["params"]["high_confidence_threshold"] == 0.9
    assert trace.model == tiny_model.name and trace.prompt == PROMPT
