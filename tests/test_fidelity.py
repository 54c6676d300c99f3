"""Fidelity to the published code: SlowFast's forward count and decisions against a longhand
oracle written the way the reference sampler is structured (loops over blocks, sub-cycles,
exploration steps and the fast phase, batch 1, greedy), and the differences from the published
code, each pinned (README, "Differences from the published code"): the argmax, ties, the Dream
variant's temperature, padded embedding rows, the noise, the cycle cap."""
import copy
import dataclasses
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from slowfast.engine import GenerationSettings, Run, confidences, generate
from slowfast.models import DLLM, load_model
from slowfast.models.tiny import write_tiny_checkpoint, write_tiny_dream_checkpoint
from slowfast.samplers import DecodingStalled, Layout, Observation, Scoring, make_policy
from slowfast.samplers.scoring import score_logits


@pytest.fixture(scope="module")
def peaky_model(tmp_path_factory):
    """Output layer scaled up: many positions above 0.9, so fast stages decode in parallel."""
    return load_model(str(write_tiny_checkpoint(tmp_path_factory.mktemp("peaky"), seed=1, logit_scale=40.0)),
                      device="cpu")


@torch.no_grad()
def reference_slowfast(net, prompt_ids, mask_id, gen_length, block_length, k_exploration_steps=6,
                       cycle_len_confidence_threshold=0.3, cycle_length_stability_window=2,
                       cycle_length_stability_std_dev_threshold=1.0, high_confidence_threshold=0.9):
    """(final tokens, positions decoded by each forward, NFE) as the published loop does it."""
    P = len(prompt_ids)
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[0, :P] = torch.tensor(prompt_ids)
    orders, nfe = [], 0

    def conf_and_tokens(logits):
        probs = torch.softmax(logits.float(), -1)
        tok = logits.argmax(-1)
        conf = probs.gather(-1, tok[:, None])[:, 0]
        masked = x[0, P:] == mask_id
        return torch.where(masked, conf, torch.tensor(-np.inf)), tok, masked

    def fill(conf, tok, masked, lo, hi):
        sure = ((conf[lo:hi] >= high_confidence_threshold) & masked[lo:hi]).nonzero()[:, 0]
        if sure.numel() > 1:
            pos = (lo + sure).tolist()
        elif masked[lo:hi].any():
            pos = [lo + int(conf[lo:hi].argmax())]
        else:
            pos = []
        for p in pos:
            x[0, P + p] = tok[p]
        orders.append(sorted(pos))

    for b in range(gen_length // block_length):
        bs, be = b * block_length, (b + 1) * block_length
        last_len, length = 0, block_length
        while (x[0, P + bs:P + be] == mask_id).any():
            history = deque(maxlen=cycle_length_stability_window)
            determined = False
            for k in range(k_exploration_steps):  # always all of them
                nfe += 1
                conf, tok, masked = conf_and_tokens(net(x)[0, P:])
                if not determined:
                    hits = (conf[bs + last_len:be] >= cycle_len_confidence_threshold).nonzero()[:, 0]
                    est = min(max(1, last_len + (int(hits.max()) + 1 if hits.numel() else 1)), block_length)
                    history.append(est)
                    if len(history) >= cycle_length_stability_window:
                        if np.std(np.array(history)) < cycle_length_stability_std_dev_threshold:
                            length, determined = est, True
                        else:
                            length = int(np.mean(np.array(history)))
                            determined = k == k_exploration_steps - 1
                fill(conf, tok, masked, bs + last_len, be)
            if not determined:
                length = int(np.mean(np.array(history)))
            end = bs + length
            tail = None
            while (x[0, P + bs + last_len:P + end] == mask_id).any():
                nfe += 1
                if tail is None:
                    logits = net(x)[0, P:]
                    tail = logits[end:]
                else:
                    logits = torch.cat([net(x[:, :P + end])[0, P:], tail])
                conf, tok, masked = conf_and_tokens(logits)
                fill(conf, tok, masked, bs + last_len, end)
            last_len = length
    return x[0, P:].tolist(), orders, nfe


CASES = [(64, 64), (64, 32), (32, 16), (48, 16)]


@pytest.mark.parametrize("which", ["tiny", "peaky"])
@pytest.mark.parametrize("gen_length, block_length", CASES)
def test_slowfast_reference_matches_the_published_loop(tiny_model, peaky_model, which, gen_length, block_length):
    model = tiny_model if which == "tiny" else peaky_model
    prompt = model.encode_prompt("What is 7+5?", chat=False)
    tokens, orders, nfe = reference_slowfast(model.net, prompt, model.mask_id, gen_length, block_length)
    s = GenerationSettings(sampler="slowfast", gen_length=gen_length, block_length=block_length)
    trace = generate(model, prompt, s)
    assert [sorted(r.decoded) for r in trace.records] == orders
    assert trace.tokens == tokens and trace.summary["nfe"] == nfe


@pytest.mark.parametrize("gen_length, block_length", CASES)
def test_stop_when_full_saves_only_forwards_that_decode_nothing(peaky_model, gen_length, block_length):
    prompt = peaky_model.encode_prompt("What is 7+5?", chat=False)
    runs = {}
    for early in (False, True):
        s = GenerationSettings(sampler="slowfast", gen_length=gen_length, block_length=block_length,
                               params={"stop_when_full": early})
        runs[early] = generate(peaky_model, prompt, s)
    ref, ours = runs[False], runs[True]
    assert ours.tokens == ref.tokens
    assert [r.decoded for r in ours.records] == [r.decoded for r in ref.records if r.decoded]
    idle = [r for r in ref.records if not r.decoded]
    assert all(r.stage == "slow" for r in idle)
    assert ours.summary["nfe"] == ref.summary["nfe"] - len(idle)
    assert ref.settings["params"]["stop_when_full"] is False and ours.settings["params"]["stop_when_full"] is True


def test_a_full_block_keeps_the_slow_stage_running(peaky_model):
    """On the peaky model the first slow forward fills a 16-token block; the published loop
    still runs the other five exploration forwards before it moves to the next block."""
    prompt = peaky_model.encode_prompt("What is 7+5?", chat=False)
    s = GenerationSettings(sampler="slowfast", gen_length=32, block_length=16)
    trace = generate(peaky_model, prompt, s)
    stages = [(r.block, r.stage, len(r.decoded)) for r in trace.records]
    first_block = [t for t in stages if t[0] == 0]
    assert len(first_block) >= 6 and all(st == "slow" for _, st, _ in first_block[:6])
    assert any(n == 0 for _, _, n in first_block)


# --- differences that are ours on purpose -------------------------------------------------------

def test_greedy_argmax_is_the_true_argmax_even_where_exp_overflows():
    """The SlowFast repository's LLaDA sampler takes argmax(exp(logits)) at temperature 0, which
    is inf for every logit above ~88.7 in float32 (and bf16) and then picks the first such
    token; ours takes the largest logit, as LLaDA's current generate.py and Fast-dLLM do."""
    logits = torch.tensor([[0.0, 100.0, 200.0, 150.0]])
    assert int(logits.exp().argmax(-1)) == 1  # what the SlowFast repository's code would pick
    conf, tok = confidences(logits, 0.0, None)
    assert int(tok) == 2 and float(conf) == pytest.approx(1.0)


def test_sampled_runs_draw_seeded_float64_noise_over_the_generated_rows(tiny_model):
    """Temperature noise comes from our own seeded generator (same seed, same run), not
    from the global RNG the references use; so a sampled run is reproducible here but does
    not match a reference run token for token."""
    s = GenerationSettings(sampler="baseline", gen_length=16, block_length=16, steps=16, temperature=1.0, seed=3)
    torch.manual_seed(0)
    a = generate(tiny_model, "What is 7+5?", s)
    torch.manual_seed(12345)  # the global RNG does not matter
    b = generate(tiny_model, "What is 7+5?", s)
    assert a.tokens == b.tokens


def test_the_cycle_cap_stops_the_run_instead_of_leaving_masks(tiny_model):
    """The reference leaves a block with masks after max_sub_cycles_per_block and moves on;
    ours ends the run with a clear error (status 1 on the CLI) and keeps the partial trace."""
    s = GenerationSettings(sampler="slowfast", gen_length=32, block_length=32,
                           params={"exploration_steps": 1, "max_cycles": 1, "horizon_threshold": 1.0})
    run = Run(tiny_model, "What is 7+5?", s)
    with pytest.raises(DecodingStalled, match="max_cycles=1"):
        for _ in run:
            pass
    assert run.trace.records and run.trace.summary["error"]


# --- fidelity notes (issue 26): the argmax, ties, the Dream variant's temperature, padded rows ---------

def test_greedy_argmax_is_the_true_argmax_also_where_float64_exp_overflows():
    """At temperature 0 ours is the true argmax on both paths (LLaDA's rule and Dream's
    scoring), also above ~709.78 where exp overflows in float64 (the SlowFast repository's
    LLaDA code takes argmax(exp(logits)) in the model's dtype, an older LLaDA generate.py
    in float64; current LLaDA and Fast-dLLM return the logits unchanged at temperature 0).
    No noise is drawn: the run's generator is left as it was."""
    logits = torch.tensor([[0.0, 750.0, 800.0, 760.0]])
    assert int(logits.double().exp().argmax(-1)) == 1  # every exp is inf: the first one wins
    generator = torch.Generator().manual_seed(7)
    state = generator.get_state()
    conf, tok = confidences(logits, 0.0, generator)
    assert int(tok) == 2 and float(conf) == 1.0
    _, dream_tok, _ = score_logits(logits, 0.0, generator, Scoring())
    assert int(dream_tok) == 2
    assert torch.equal(generator.get_state(), state)


@pytest.fixture(scope="module")
def huge_logits_model(tmp_path_factory):
    """Output layer scaled by 400: logits up to ~1400, where exp overflows in float32 and float64."""
    return load_model(str(write_tiny_checkpoint(tmp_path_factory.mktemp("huge"), logit_scale=400.0)), device="cpu")


@pytest.mark.parametrize("sampler, params", [("baseline", {}), ("slowfast", {}), ("threshold", {}),
                                             ("slowfast", {"variant": "dream"})])
def test_a_greedy_run_records_the_true_argmax_where_exp_would_pick_another(huge_logits_model, sampler, params):
    model = huge_logits_model
    prompt = model.encode_prompt("What is 7+5?", chat=False)
    s = GenerationSettings(sampler=sampler, gen_length=16, block_length=16, steps=16, params=params)
    trace = generate(model, prompt, s)
    x = torch.tensor([prompt + [model.mask_id] * 16])
    logits = model.forward(x, start=len(prompt))[0]
    true = logits.argmax(-1).tolist()
    assert trace.records[0].argmax.tolist() == true
    assert logits.exp().argmax(-1).tolist() != true and logits.double().exp().argmax(-1).tolist() != true


def test_sampled_tokens_are_llada_s_float64_gumbel_max_with_its_overflow():
    """At temperature > 0 ours is LLaDA's and Fast-dLLM's rule: argmax(exp(l) / (-log u) ** T)
    in float64. Where no exp overflows that is the Gumbel-max argmax(l / T - log(-log u)) for
    the same u; above ~709.78 every exp is inf and the first overflowing token wins whatever
    the noise (so does the references'), not the true Gumbel-max's token."""
    rows, T = 400, 0.7
    logits = torch.randn(rows, 50, generator=torch.Generator().manual_seed(0)) * 4
    _, tok = confidences(logits, T, torch.Generator().manual_seed(1))
    u = torch.rand(logits.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gumbel_max = (logits.double() / T - torch.log(-torch.log(u))).argmax(-1)
    assert torch.equal(tok, gumbel_max)
    assert (tok != logits.argmax(-1)).any(), "the noise should change some tokens"
    huge = torch.tensor([[0.0, 750.0, 800.0]]).repeat(rows, 1)
    _, tok = confidences(huge, T, torch.Generator().manual_seed(1))
    u = torch.rand(huge.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert tok.tolist() == [1] * rows
    assert (huge.double() / T - torch.log(-torch.log(u))).argmax(-1).tolist() == [2] * rows


# Ties among equal scores (saturated probabilities of exactly 1.0, or any equal values) go to
# the lowest position here; the published code takes torch.topk's order, which is not
# specified for ties (Dream's two copies call it on the masked positions only or on the whole
# canvas with -inf elsewhere, and do not agree). Scripted confidences: four saturated ties.
TIES = np.array([0.3, 1.0, 0.3, 1.0, 1.0, 0.3, 1.0, 0.1], np.float32)


def scripted_run(sampler, params, conf=TIES, score=None, steps=4):
    """Decisions of a policy on a canvas whose confidences never change: [(decoded, masked before)]."""
    G = conf.size
    layout = Layout(G, G, steps)
    policy = make_policy(sampler, params)
    policy.check_layout(layout)
    policy.reset(layout, np.random.default_rng(0))
    mask, out = np.ones(G, bool), []
    while not policy.done(mask) and len(out) < 4 * G:
        d = policy.decide(Observation(mask=mask.copy(), confidence=conf.copy(),
                                      score=None if score is None else score.copy()))
        out.append((sorted(int(p) for p in d.decode), mask.copy(), d))
        mask[d.decode] = False
    assert not mask.any()
    return out


def lowest_of_the_best(values, candidates, k):
    """The k candidates with the highest values, equal values by lower position first."""
    idx = np.flatnonzero(candidates)
    return sorted(sorted(idx.tolist(), key=lambda i: (-float(values[i]), i))[:k])


def test_ties_go_to_the_lowest_position_in_the_baseline():
    steps = [decoded for decoded, _, _ in scripted_run("baseline", {})]
    assert steps == [[1, 3], [4, 6], [0, 2], [5, 7]]  # torch.topk may take e.g. [3, 6] first


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
def test_ties_go_to_the_lowest_position_in_dream_s_decoding(alg):
    # saturated rows score 1.0 (probability, margin) or exactly 0.0 (negative entropy)
    score = TIES if alg != "entropy" else np.where(TIES == 1.0, 0.0, -1.0 - TIES).astype(np.float32)
    run = scripted_run("dream", {"alg": alg}, score=score, steps=8)
    broken = 0
    for decoded, masked, _ in run:
        assert decoded == lowest_of_the_best(score, masked, len(decoded))
        top = score[masked].max() if masked.any() else None
        broken += 0 < len(decoded) < int((score[masked] == top).sum())
    assert broken, "some step should have had to break a tie"


@pytest.mark.parametrize("params", [{}, {"variant": "paper"}, {"variant": "dream"}])
def test_slowfast_decodes_saturated_ties_together_and_breaks_other_ties_lowest_first(params):
    """Two or more saturated positions are all above the threshold, so SlowFast decodes them
    together (the tie cannot matter); below it, the single most confident is the lowest."""
    run = scripted_run("slowfast", params)
    assert run[0][0] == [1, 3, 4, 6]
    singles = 0
    for decoded, masked, d in run[1:]:
        if len(decoded) == 1:
            lo, hi = d.span if d.stage == "fast" else (d.span[0], TIES.size)
            scope = masked.copy()
            scope[:lo], scope[hi:] = False, False
            assert decoded == lowest_of_the_best(TIES, scope, 1)
            singles += int((TIES[scope] == TIES[decoded[0]]).sum() > 1)
    assert singles, "some step should have had to break a tie"


@pytest.mark.parametrize("params", [{}, {"factor": 1.0}])
def test_threshold_decodes_saturated_ties_together_and_breaks_other_ties_lowest_first(params):
    steps = [decoded for decoded, _, _ in scripted_run("threshold", params)]
    assert steps == [[1, 3, 4, 6], [0], [2], [5], [7]]


def test_greedy_llada_confidences_are_float32_so_near_certain_ones_tie_at_one():
    """At temperature 0 the LLaDA rule's confidences are float32 softmax probabilities (at
    temperature > 0 float64, as LLaDA's): probabilities within ~3e-8 of 1 are exactly 1.0 and
    tie, and the baseline takes the lower position, where LLaDA's generate.py (float64 softmax)
    still ranks them. On a peaky checkpoint this, not the noise, is what separates a greedy
    baseline run from the published one."""
    logits = torch.tensor([[20.0, 0.0], [25.0, 0.0]])  # row 1 is the more certain one
    conf, _ = confidences(logits, 0.0, None)
    assert conf.tolist() == [1.0, 1.0]
    p64 = torch.softmax(logits.double(), -1)[:, 0]
    assert p64[1] > p64[0]
    policy = make_policy("baseline", {})
    policy.reset(Layout(2, 2, 2), np.random.default_rng(0))
    assert policy.decide(Observation(mask=np.ones(2, bool), confidence=conf.numpy())).decode.tolist() == [0]
    assert int(p64.argmax()) == 1  # what LLaDA's generate.py would unmask first


def test_llada2_s_most_confident_fallback_breaks_saturated_ties_lowest_first():
    """Nothing is strictly above an M2T threshold of 1.0, so each forward takes the
    ``min_transfer`` most confident: the saturated ties, two by two, lowest first."""
    steps = [decoded for decoded, _, _ in scripted_run("llada2", {"m2t_threshold": 1.0, "min_transfer": 2})]
    assert [d for d in steps if d] == [[1, 3], [4, 6], [0, 2], [5, 7]]
    assert [d for d, _, _ in scripted_run("llada2", {})][:2] == [[1, 3, 4, 6], [0]]


class PositionNet(torch.nn.Module):
    """A stand-in network: generated position g predicts token 7 with logit ``gaps[g]`` over
    zeros, whatever the canvas (a gap of 40 saturates float32's softmax to exactly 1.0)."""

    def __init__(self, vocab: int, prompt_len: int, gaps):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.P, self.gaps = prompt_len, torch.tensor(gaps, dtype=torch.float32)
        self.cfg = SimpleNamespace(vocab_size=vocab, max_sequence_length=512, n_layers=1)

    def forward(self, tokens, cache=None, logits_from=0):
        B, T = tokens.shape
        logits = torch.zeros(B, T, self.cfg.vocab_size)
        G = min(T - self.P, self.gaps.numel())
        logits[:, self.P:self.P + G, 7] = self.gaps[:G]
        return logits[:, logits_from:]

    def forward_flops(self, *args, **kwargs):
        return 0.0


@pytest.mark.parametrize("sampler, params", [("baseline", {}), ("dream", {"alg": "maskgit_plus"}),
                                             ("dream", {"alg": "entropy"}), ("dream", {"alg": "topk_margin"})])
def test_saturated_probabilities_tie_in_a_run_and_go_to_the_lowest_position(tiny_model, sampler, params):
    gaps = [1.0, 40.0, 1.5, 40.0, 40.0, 2.0, 40.0, 0.5]
    prompt = [10, 11, 12]
    stub = DLLM(name="positions", net=PositionNet(50, len(prompt), gaps), tokenizer=tiny_model.tokenizer,
                mask_id=49, eos_ids=frozenset())
    trace = generate(stub, prompt, GenerationSettings(sampler=sampler, gen_length=8, block_length=8, steps=4,
                                                      params=params))
    conf = trace.records[0].confidence
    assert [float(c) for c in conf[[1, 3, 4, 6]]] == [1.0] * 4  # saturated: exactly 1.0
    assert trace.records[0].decoded == ([1] if sampler == "dream" else [1, 3])  # Dream's schedule: 1 first
    masked = np.ones(8, bool)
    for r in trace.records:
        assert sorted(r.decoded) == lowest_of_the_best(np.array(gaps), masked, len(r.decoded))
        masked[r.decoded] = False


# The published SlowFast Dream code never reads the temperature: every token is its position's
# most likely one (softmax(logits).max()). Ours does the same for variant=dream; the other
# variants sample at temperature > 0 as LLaDA's code does.

@pytest.fixture(scope="module")
def dream_model(tmp_path_factory):
    return load_model(str(write_tiny_dream_checkpoint(tmp_path_factory.mktemp("dream"))), device="cpu")


def test_the_dream_variant_takes_the_most_likely_token_at_any_temperature(dream_model):
    model = dream_model
    prompt = model.encode_prompt("What is 2+2?", chat=False)

    def run(temperature, seed, variant="dream"):
        return generate(model, prompt, GenerationSettings(sampler="slowfast", gen_length=24, block_length=24,
                                                          temperature=temperature, seed=seed,
                                                          params={"variant": variant}))

    greedy = run(0.0, 0)
    for temperature, seed in ((0.7, 1), (1.5, 2), (1.5, 3)):
        hot = run(temperature, seed)
        assert hot.tokens == greedy.tokens
        assert [r.decoded for r in hot.records] == [r.decoded for r in greedy.records]
        assert all(np.array_equal(a.confidence, b.confidence) for a, b in zip(hot.records, greedy.records))
        assert hot.settings["temperature"] == temperature  # recorded as asked
    # the LLaDA variants do sample on the same model, at the same temperatures and seeds
    reference = run(0.0, 0, "reference").tokens
    assert all(run(temperature, seed, "reference").tokens != reference for temperature, seed in ((0.7, 1), (1.5, 2)))


def test_greedy_scoring_ignores_the_temperature_and_draws_nothing():
    logits = torch.tensor([[0.0, 1.0, 0.5], [2.0, 0.0, 1.9]])
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    conf, tok, score = score_logits(logits, 5.0, generator, Scoring(greedy=True))
    probs = logits.softmax(-1)
    assert tok.tolist() == [1, 0] and torch.equal(conf, probs.max(-1).values) and torch.equal(score, conf)
    assert torch.equal(generator.get_state(), state)
    assert make_policy("slowfast", {"variant": "dream"}).scoring() == Scoring(greedy=True)
    assert make_policy("slowfast", {}).scoring() is None
    assert make_policy("slowfast", {"variant": "paper"}).scoring() is None
    drawn = {int(score_logits(logits, 5.0, torch.Generator().manual_seed(s), Scoring())[1][0]) for s in range(20)}
    assert len(drawn) > 1  # without greedy the same temperature draws


# Padded embedding rows: LLaDA's modeling code returns logits over all embedding_size rows, so
# its argmax can be a padded row (an id >= vocab_size); ours cuts the logits at vocab_size.

def test_padded_rows_would_win_without_the_cut_and_ours_never_emits_them(tmp_path):
    model = load_model(str(write_tiny_checkpoint(tmp_path / "padded")), device="cpu")
    vocab, rows = model.vocab_size, model.net.cfg.rows
    assert rows == vocab + 4  # the tiny checkpoint's embedding_size has 4 padded rows
    with torch.no_grad():  # +/- C along two hidden axes: some padded row is far above every real one
        head = model.net.transformer["ff_out"].weight
        head[vocab:] = 0.0
        for i, (axis, sign) in enumerate(((0, 1), (0, -1), (1, 1), (1, -1))):
            head[vocab + i, axis] = sign * 1e4
    prompt = model.encode_prompt("What is 7+5?", chat=False)
    x = torch.tensor([prompt + [model.mask_id] * 16])
    uncut = copy.deepcopy(model.net)
    uncut.cfg = dataclasses.replace(model.net.cfg, vocab_size=rows)  # the references' logits: every row
    assert (uncut(x)[0, len(prompt):].argmax(-1) >= vocab).all()
    assert model.forward(x, start=len(prompt)).shape[-1] == vocab
    for sampler in ("baseline", "slowfast", "threshold"):
        trace = generate(model, prompt, GenerationSettings(sampler=sampler, gen_length=16, block_length=16, steps=16))
        assert max(trace.tokens) < vocab and all(int(r.argmax.max()) < vocab for r in trace.records)


def test_dream_s_vocab_size_is_its_padded_row_count_so_nothing_is_cut(tmp_path):
    """Dream's config.json gives vocab_size as the padded row count (Dream-7B: 152064 rows for
    151667 tokenizer tokens), so ours cuts nothing there: ids past the tokenizer's last token
    can be emitted here as in the reference, and show as empty text."""
    model = load_model(str(write_tiny_dream_checkpoint(tmp_path / "dream")), device="cpu")
    assert model.vocab_size == model.net.cfg.rows > len(model.tokenizer)
    assert model.token_strings([model.vocab_size - 1]) == [""]
