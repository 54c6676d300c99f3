"""The published rules compare with >=: a confidence exactly at a threshold counts as reaching it
(docs/algorithms.md: Fast-dLLM's threshold and factor rules, SlowFast's high-confidence and
horizon rules). The confidences here are exact in float32 (0.5, 0.75, 0.875), so a rule that
compared with > would decide differently on every test below."""
import numpy as np
import pytest

from slowfast.samplers import Layout, Observation, make_policy

LAYOUT = Layout(gen_length=8, block_length=8, steps=8)


def decide(sampler: str, params: dict, confidence: list[float], masked: int = 8):
    policy = make_policy(sampler, params)
    policy.reset(LAYOUT, np.random.default_rng(0))
    mask = np.zeros(8, bool)
    mask[:masked] = True
    conf = np.asarray(confidence, dtype=np.float32)
    assert conf.tolist() == confidence  # exactly representable: equality is exact
    return policy, policy.decide(Observation(mask=mask, confidence=conf))


def test_the_threshold_sampler_decodes_a_confidence_equal_to_its_threshold():
    # Fast-dLLM: every masked position of the block with c >= threshold (at least one)
    _, d = decide("threshold", {"threshold": 0.75}, [0.5, 0.75, 0.25, 0.75, 0.5, 0.25, 0.5, 0.25])
    assert d.decode.tolist() == [1, 3]  # with c > threshold: only the single most confident one


def test_the_factor_rule_counts_a_confidence_equal_to_its_bound():
    # the largest n with c(n) >= 1 - factor / (n + 1): with factor 1, c(3) = 0.75 = 1 - 1/4
    _, d = decide("threshold", {"factor": 1.0}, [0.75, 0.25, 0.75, 0.25, 0.75, 0.25, 0.25, 0.25])
    assert d.decode.tolist() == [0, 2, 4]  # with >: n = 2


@pytest.mark.parametrize("variant", ["reference", "paper", "dream"])
def test_slowfast_decodes_in_parallel_at_exactly_its_high_confidence_threshold(variant):
    # at least two masked positions with c >= high_confidence_threshold: all of them
    conf = [0.875, 0.5, 0.875, 0.5, 0.5, 0.5, 0.5, 0.5]
    params = {"variant": variant, "high_confidence_threshold": 0.875, "slow_confidence_threshold": 0.875}
    policy, slow = decide("slowfast", params, conf)
    assert slow.stage == "slow" and slow.decode.tolist() == [0, 2]  # with >: only the most confident one
    # the fast stage uses the same rule (the span frozen over the whole block)
    policy.stage, policy.span_end, policy.last_len = "fast", 8, 0
    fast = policy.decide(Observation(mask=np.ones(8, bool), confidence=np.asarray(conf, dtype=np.float32)))
    assert fast.stage == "fast" and fast.decode.tolist() == [0, 2]


def test_slowfast_extends_the_horizon_to_a_confidence_equal_to_its_threshold():
    # the horizon: the farthest masked position with c >= horizon_threshold
    _, d = decide("slowfast", {"horizon_threshold": 0.5}, [0.75, 0.25, 0.25, 0.25, 0.5, 0.25, 0.25, 0.25])
    assert d.info["estimate"] == 5  # with >: 1 (position 0 is the farthest above 0.5)
