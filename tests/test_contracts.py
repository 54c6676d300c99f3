"""The typed contracts between the rooms: stages, SlowFast's per-step info and the
thresholds views draw against come from the policies, not from string keys the views know."""
import pytest

import visuals
from slowfast.engine import GenerationSettings, generate
from slowfast.samplers import Stage, Thresholds, make_policy, thresholds_of
from slowfast.samplers.slowfast import SlowFastInfo
from visuals.view import TraceView


def test_each_policy_states_its_thresholds():
    sf = make_policy("slowfast", {"tau_min_conf": 0.2, "high_confidence_threshold": 0.8, "W_hist": 3,
                                  "std_threshold": 0.5, "exploration_steps": 4})
    assert sf.thresholds() == Thresholds(high_confidence=0.8, slow_confidence=0.8, horizon=0.2, spread=0.5,
                                         stability_window=3, exploration_steps=4)
    paper = make_policy("slowfast", {"variant": "paper"}).thresholds()
    assert (paper.spread_measure, paper.spread_label, paper.horizon, paper.high_confidence) == (
        "variance", "variance", 0.1, 0.85)
    dream = make_policy("slowfast", {"variant": "dream"}).thresholds()
    assert dream.slow_confidence == 0.8 and dream.spread_inclusive and dream.stable(1.0)
    assert not make_policy("slowfast", {}).thresholds().stable(1.0)  # the reference's test is strict
    assert make_policy("threshold", {"threshold": 0.7}).thresholds() == Thresholds(threshold=0.7)
    assert make_policy("baseline", {"remasking": "random"}).thresholds().remasking == "random"
    assert make_policy("dream", {}).thresholds() == Thresholds()


def test_threshold_lines_merge_equal_levels_and_skip_the_factor_rule():
    assert Thresholds(horizon=0.9, high_confidence=0.9).lines() == [(0.9, "high/horizon")]
    assert Thresholds(horizon=0.3, high_confidence=0.9).lines() == [(0.3, "horizon"), (0.9, "high")]
    assert Thresholds(threshold=0.7, factor=1.0).lines() == []


def test_settings_that_make_no_policy_give_no_thresholds():
    assert thresholds_of({"sampler": "warp"}) == Thresholds()
    assert thresholds_of({"sampler": "slowfast", "params": {"horizon_threshold": 7}}) == Thresholds()


@pytest.fixture(scope="module")
def sf_trace(tiny_model):
    return generate(tiny_model, "Hello there", GenerationSettings(
        sampler="slowfast", gen_length=32, block_length=32, chat=False,
        params={"horizon_threshold": 0.05, "high_confidence_threshold": 0.05, "exploration_steps": 2}))


def test_slowfast_records_carry_exactly_their_typed_info(sf_trace):
    stages = {r.stage for r in sf_trace.records}
    assert stages <= {Stage.SLOW, Stage.FAST} and Stage.SLOW in stages
    for r in sf_trace.records:
        info = SlowFastInfo.of(r)
        assert info is not None and info.to_info() == r.info  # nothing a view reads is outside the type
        assert (info.estimate is not None) == (info.frozen is not None) == (r.stage == Stage.SLOW)
    assert SlowFastInfo.of(type("R", (), {"info": {"k": 1}})()) is None  # another sampler's record


def test_views_read_the_policys_thresholds_not_parameter_names(sf_trace):
    view = TraceView(sf_trace)
    assert view.limits == make_policy("slowfast", sf_trace.settings["params"]).thresholds()
    assert view.thresholds() == [(0.05, "high/horizon")]
    fig = visuals.convergence(sf_trace)
    names = [t.name for t in fig.data]
    if any(r.horizons for r in sf_trace.records):
        assert "std threshold 1" in names and "spread (std)" in names
    text = visuals.explain_step(sf_trace, 0)
    assert "horizon threshold 0.05" in text and "?" not in text.split("<details>")[0]
