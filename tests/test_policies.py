"""The decoding policies, driven by scripted confidence arrays (no model involved)."""
import numpy as np
import pytest

from slowfast.samplers import DecodingStalled, Layout, Observation, make_policy
from slowfast.samplers.baseline import transfer_schedule
from slowfast.samplers.threshold import factor_count

LAYOUT = Layout(gen_length=16, block_length=8, steps=16)


def obs(conf, mask=None):
    conf = np.asarray(conf, dtype=np.float32)
    mask = np.ones(conf.size, bool) if mask is None else np.asarray(mask, bool)
    return Observation(mask=mask, confidence=conf)


def started(name, layout=LAYOUT, seed=0, **params):
    policy = make_policy(name, params)
    policy.check_layout(layout)
    policy.reset(layout, np.random.default_rng(seed))
    return policy


def apply(mask, decision):
    mask = np.array(mask, bool)
    assert mask[decision.decode].all(), "a policy may only decode masked positions"
    mask[decision.decode] = False
    return mask


# --- SlowFast ---------------------------------------------------------------------------------

def low(n=16, value=0.05):
    return np.full(n, value, dtype=np.float32)


def scripted(farthest, lead, value=0.5):
    """Confident leading positions (decoded one per slow step, most confident first) and one
    confident position further right that sets the horizon while it stays masked."""
    conf = low()
    conf[:lead] = 0.8 - 0.01 * np.arange(lead)
    conf[farthest] = value
    return conf


def test_horizon_is_the_farthest_confident_masked_position_plus_one():
    p = started("slowfast")
    conf = low()
    conf[[2, 5]] = 0.4  # >= 0.3: the farthest is offset 5 -> span end 6
    conf[12] = 0.95  # confident, but in the next block: outside the scope
    d = p.decide(obs(conf))
    assert d.stage == "slow" and d.info["estimate"] == 6
    assert d.horizons == [6] and d.span == (0, 6)


def test_horizon_ignores_decoded_positions_and_defaults_to_one():
    p = started("slowfast")
    conf = low()
    conf[7] = 0.99
    mask = np.ones(16, bool)
    mask[7] = False  # decoded already: does not count
    d = p.decide(obs(conf, mask))
    assert d.info["estimate"] == 1 and d.span == (0, 1)


def test_span_freezes_when_the_window_std_is_below_threshold():
    p = started("slowfast", exploration_steps=4)
    mask = np.ones(16, bool)
    spans = []
    for farthest in (5, 5, 7, 7):  # estimates 6, 6 (std 0: frozen at 6), 8, 8
        d = p.decide(obs(scripted(farthest, lead=4), mask))
        spans.append(d.span)
        mask = apply(mask, d)
    assert spans[0] == (0, 6)
    assert spans[1:] == [(0, 6)] * 3  # frozen: later estimates do not move it
    assert d.info["frozen"] is True


def test_unstable_window_uses_the_mean_and_freezes_on_the_last_exploration_step():
    p = started("slowfast", exploration_steps=3)
    mask = np.ones(16, bool)
    ends = []
    for farthest in (3, 7, 3):  # estimates 4, 8 (std 2 -> mean 6), 4 (std 2 -> mean 6, last step)
        d = p.decide(obs(scripted(farthest, lead=3), mask))
        ends.append((d.span[1], d.info["frozen"]))
        mask = apply(mask, d)
    assert ends == [(4, False), (6, False), (6, True)]
    assert d.horizon_spread == pytest.approx(2.0)
    assert p.stage == "fast"


@pytest.mark.parametrize("stage_conf, expected", [
    ({3: 0.95, 6: 0.92, 10: 0.99}, [3, 6]),  # >= 2 above 0.9 in the block: all of them (beyond span too)
    ({3: 0.95, 6: 0.5, 10: 0.99}, [3]),  # only one above: the single most confident
    ({3: 0.6, 6: 0.7}, [6]),  # none above: the single most confident
])
def test_cautious_decode_rule(stage_conf, expected):
    p = started("slowfast")
    conf = low()
    for i, c in stage_conf.items():
        conf[i] = c
    assert p.decide(obs(conf)).decode.tolist() == expected


def run_slow_stage(p, steps, conf):
    mask = np.ones(16, bool)
    for _ in range(steps):
        d = p.decide(obs(conf, mask))
        mask = apply(mask, d)
    return mask, d


def test_fast_stage_decodes_only_the_span_and_truncates_after_its_first_forward():
    p = started("slowfast", exploration_steps=2)
    mask, d = run_slow_stage(p, 2, scripted(4, lead=2))  # decodes 0, 1; estimates 5, 5 -> span [0, 5)
    assert d.stage == "slow" and d.next_extent is None  # the first fast forward is a full one
    assert p.stage == "fast"
    fast_conf = low()
    fast_conf[[6, 7]] = 0.99  # beyond the span: never decoded in the fast stage
    d = p.decide(obs(fast_conf, mask))
    assert d.stage == "fast" and d.span == (0, 5)
    assert d.decode.tolist() == [2]  # all span positions equally unsure: the first
    assert d.next_extent == 5  # later forwards see the canvas only up to the span end
    mask = apply(mask, d)
    span_conf = low()
    span_conf[[1, 2, 3]] = 0.97
    d = p.decide(obs(span_conf, mask))
    assert sorted(d.decode.tolist()) == [i for i in (1, 2, 3) if mask[i]]


def test_full_span_starts_a_new_cycle_at_the_span_end():
    p = started("slowfast", exploration_steps=1)
    conf = low()
    conf[[0, 1]] = 0.95  # both decoded in the slow step; horizon 2 -> span [0, 2) already full
    d = p.decide(obs(conf))
    assert d.decode.tolist() == [0, 1]
    assert p.stage == "slow" and p.last_len == 2 and p.cycle == 2
    mask = np.ones(16, bool)
    mask[[0, 1]] = False
    d = p.decide(obs(low(), mask))
    assert d.span[0] == 2 and d.info["cycle"] == 2


def test_block_boundary_moves_to_the_next_block():
    p = started("slowfast", exploration_steps=1)
    conf = low()
    conf[:8] = 0.95  # the whole first block in one step
    d = p.decide(obs(conf))
    assert d.block == 0 and d.decode.tolist() == list(range(8))
    mask = np.ones(16, bool)
    mask[:8] = False
    d = p.decide(obs(low(), mask))
    assert d.block == 1 and d.span[0] == 8 and set(d.decode.tolist()) <= set(range(8, 16))


def test_cycle_cap_stops_with_a_clear_error():
    p = started("slowfast", exploration_steps=1, max_cycles=1)
    d = p.decide(obs(low()))  # one token decoded, span [0, 1) full -> a second cycle is needed
    with pytest.raises(DecodingStalled, match="max_cycles=1"):  # raised by the next forward's decision
        p.decide(obs(low(), apply(np.ones(16, bool), d)))


def test_paper_variant_exits_the_slow_stage_once_converged():
    p = started("slowfast", variant="paper")
    assert (p.exploration_steps, p.horizon_threshold, p.high_confidence_threshold) == (8, 0.1, 0.85)
    mask, d = run_slow_stage(p, 2, scripted(4, lead=2, value=0.2))  # 0.2 >= tau_min_conf 0.1
    assert d.info["frozen"] and p.stage == "fast"  # two equal estimates: variance 0 -> fast now


def test_reference_aliases_are_accepted():
    p = make_policy("slowfast", {"k_exploration_steps": 3, "cycle_len_confidence_threshold": 0.2,
                                 "cycle_length_stability_window": 3,
                                 "cycle_length_stability_std_dev_threshold": 0.5,
                                 "max_sub_cycles_per_block": 9})
    assert (p.exploration_steps, p.horizon_threshold, p.stability_window, p.std_threshold, p.max_cycles) == (
        3, 0.2, 3, 0.5, 9)


# --- baseline ---------------------------------------------------------------------------------

@pytest.mark.parametrize("masks, steps, expected", [
    (8, 4, [2, 2, 2, 2]),
    (8, 3, [3, 3, 2]),
    (10, 4, [3, 3, 2, 2]),
    (32, 32, [1] * 32),
])
def test_transfer_schedule_is_m_div_s_plus_remainder_on_early_steps(masks, steps, expected):
    assert transfer_schedule(masks, steps) == expected


def test_baseline_unmasks_the_most_confident_in_the_block_on_schedule():
    layout = Layout(gen_length=16, block_length=8, steps=6)  # 3 steps per block: 3, 3, 2
    p = started("baseline", layout)
    mask = np.ones(16, bool)
    counts, blocks = [], []
    rng = np.random.default_rng(1)
    for _ in range(6):
        conf = rng.random(16).astype(np.float32)
        conf[8:] += 1.0 if not blocks or blocks[-1] == 0 else 0.0  # next block more confident: ignored
        d = p.decide(obs(conf, mask))
        bs = 8 * d.block
        in_block = np.flatnonzero(mask[bs:bs + 8]) + bs
        best = in_block[np.argsort(-conf[in_block], kind="stable")][: len(d.decode)]
        assert sorted(d.decode.tolist()) == sorted(best.tolist())
        counts.append(len(d.decode))
        blocks.append(d.block)
        mask = apply(mask, d)
    assert counts == [3, 3, 2, 3, 3, 2] and blocks == [0, 0, 0, 1, 1, 1] and not mask.any()


def test_baseline_random_remasking_is_seeded_and_stays_in_the_block():
    # distinct scripted confidences, most confident on the left: low-confidence remasking decodes
    # left to right, two a step (8 masks, 4 steps per block); random remasking ignores them
    falling = np.linspace(0.95, 0.2, 16).astype(np.float32)
    low_confidence_order = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15]]

    def order(seed, remasking="random", conf=falling):
        p = started("baseline", Layout(16, 8, 8), seed=seed, remasking=remasking)
        mask, steps = np.ones(16, bool), []
        for _ in range(8):
            d = p.decide(obs(conf, mask))
            steps.append(sorted(d.decode.tolist()))
            mask = apply(mask, d)
        assert not mask.any()
        return steps

    assert order(0, "low_confidence") == low_confidence_order  # the scripted order is the oracle
    orders = {seed: order(seed) for seed in range(6)}
    for steps in orders.values():
        assert [len(s) for s in steps] == [2] * 8  # the linear schedule, whatever the order
        assert all(0 <= i < 8 for s in steps[:4] for i in s) and all(8 <= i < 16 for s in steps[4:] for i in s)
    assert order(3) == orders[3]  # the same seed: the same order
    assert order(3, conf=falling[::-1].copy()) == orders[3]  # random: the confidences play no part
    assert len({str(steps) for steps in orders.values()}) > 1  # other seeds: other orders
    assert any(steps != low_confidence_order for steps in orders.values())


# --- threshold --------------------------------------------------------------------------------

def test_threshold_decodes_all_confident_positions_of_the_block():
    p = started("threshold", threshold=0.8)
    conf = low()
    conf[[1, 5, 12]] = 0.9
    assert p.decide(obs(conf)).decode.tolist() == [1, 5]


def test_threshold_always_decodes_at_least_one():
    p = started("threshold", threshold=0.8)
    conf = low()
    conf[6] = 0.3
    assert p.decide(obs(conf)).decode.tolist() == [6]


def test_factor_rule():
    assert factor_count(np.array([0.99, 0.9, 0.8, 0.5]), 1.0) == 3  # 0.8 >= 1 - 1/4, 0.5 < 1 - 1/5
    assert factor_count(np.array([0.3, 0.2]), 1.0) == 1  # none qualifies: at least one
    p = started("threshold", factor=1.0)
    conf = low()
    conf[[0, 3, 4]] = [0.99, 0.9, 0.8]
    assert p.decide(obs(conf)).decode.tolist() == [0, 3, 4]


# --- every policy terminates, one block at a time ------------------------------------------------

@pytest.mark.parametrize("name, params", [
    ("baseline", {}), ("baseline", {"remasking": "random"}), ("slowfast", {}),
    ("slowfast", {"stop_when_full": True}), ("slowfast", {"variant": "paper"}),
    ("threshold", {}), ("threshold", {"factor": 1.0}),
])
@pytest.mark.parametrize("seed", range(5))
def test_every_policy_fills_the_canvas_making_progress_each_step(name, params, seed):
    """Each forward decodes something, except the rest of a slow stage whose block is
    already full (the published SlowFast code runs those forwards; at most
    exploration_steps - 1 per block)."""
    layout = Layout(gen_length=32, block_length=16, steps=32)
    p = started(name, layout, seed=seed, **params)
    rng = np.random.default_rng(seed)
    mask = np.ones(32, bool)
    conf = np.zeros(32, np.float32)
    extent, forwards, idle, last_block = 32, 0, 0, 0
    while not p.done(mask):
        conf[:extent] = rng.beta(0.5, 0.5, extent)  # beyond the extent: values of the last full forward
        d = p.decide(obs(conf, mask))
        if len(d.decode) == 0:
            assert d.stage == "slow" and not mask[d.block * 16:d.block * 16 + 16].any()
            assert name == "slowfast" and not params.get("stop_when_full")
            idle += 1
        else:
            assert max(d.decode) < extent
        assert d.block >= last_block and all(d.block * 16 <= i < d.block * 16 + 16 for i in d.decode)
        last_block = d.block
        mask = apply(mask, d)
        extent = d.next_extent or 32
        forwards += 1
        assert forwards - idle <= 32 and idle <= 2 * (p.exploration_steps - 1 if name == "slowfast" else 0)
    assert not mask.any()
