"""dLLM-Cache (slowfast/cache.py, run per layer by the transformer): exactness, the V-verify
reference, counters and FLOPs per case, hygiene."""
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F

from slowfast.cache import CACHE_PRESETS, CacheSettings, FeatureCache
from slowfast.engine import GenerationSettings, Run, generate
from slowfast.models.transformer import layer_flops

PROMPT = "What is 2+2?"


def cache_for(model, P, G, **params):
    return FeatureCache(CacheSettings(**params), P, G, model.net.cfg.n_layers)


@pytest.mark.parametrize("sampler, extra", [
    ("baseline", dict(steps=64)), ("slowfast", {}), ("threshold", dict(params={"threshold": 0.7})),
    ("baseline", dict(steps=32, cfg_scale=1.0)),
])
def test_refresh_every_forward_equals_the_uncached_forward(tiny_model, monkeypatch, sampler, extra):
    original = tiny_model.forward
    seen = []

    def checking_forward(tokens, cache=None, start=0):
        got = original(tokens, cache=cache, start=start)
        assert torch.allclose(got, original(tokens)[:, start:], atol=1e-5, rtol=0)
        seen.append(tokens.shape[1])
        return got

    monkeypatch.setattr(tiny_model, "forward", checking_forward)
    s = GenerationSettings(sampler=sampler, gen_length=64, block_length=32, cache={"kp": 1, "kr": 1, "rho": 0.5},
                           **extra)
    trace = generate(tiny_model, PROMPT, s)
    assert len(seen) == trace.summary["nfe"]
    if sampler == "slowfast":
        assert len(set(seen)) > 1, "truncated forwards must be covered"
    assert all(r.cache["response_reused"] == [0, 0] for r in trace.records)


def reference_with_cached_prompt(net, first, second, P):
    """Logits for ``second`` where every layer's prompt rows take the features that
    ``first`` produced (K, V, attention and FFN outputs) and every response row is
    recomputed against that cached prompt K/V."""
    cos, sin = net.rope(first.shape[1], first.device)
    x1, x2 = net.transformer["wte"](first), net.transformer["wte"](second)
    for block in net.transformer["blocks"]:
        n1 = block.attn_norm(x1)
        k1, v1 = block.k(n1, cos, sin), block.v(n1)
        a1 = block.attend(block.q(n1, cos, sin), k1, v1)
        f1 = block.ffn(x1 + a1)
        n2 = block.attn_norm(x2[:, P:])
        q2, k2, v2 = block.q(n2, cos[P:], sin[P:]), block.k(n2, cos[P:], sin[P:]), block.v(n2)
        a2 = block.attend(q2, torch.cat([k1[:, :, :P], k2], 2), torch.cat([v1[:, :, :P], v2], 2))
        h2 = x2[:, P:] + a2
        out_r = h2 + block.ffn(h2)
        out_p = x2[:, :P] + a1[:, :P] + f1[:, :P]
        x1 = (x1 + a1) + f1
        x2 = torch.cat([out_p, out_r], 1)
    return net.head(x2)


@torch.no_grad()
def test_rho_one_without_refresh_recomputes_responses_against_the_cached_prompt(tiny_model):
    net, P, G = tiny_model.net, 10, 24
    torch.manual_seed(0)
    first = torch.randint(10, 90, (1, P + G))
    second = first.clone()
    second[0, P:] = torch.randint(10, 90, (G,))  # the response changed, the prompt did not
    second[0, :3] = torch.randint(10, 90, (3,))  # even the prompt tokens are ignored: cached
    cache = cache_for(tiny_model, P, G, kp=100, kr=100, rho=1.0, refresh_first_layer=False)
    cache.begin_forward()
    net(first, cache=cache)
    cache.begin_forward()
    got = net(second, cache=cache)
    assert all(s.response_recomputed == G and s.prompt_reused == P for s in cache.last_stats)
    assert torch.allclose(got, reference_with_cached_prompt(net, first, second, P), atol=1e-5, rtol=0)


@torch.no_grad()
def test_scripted_schedule_counts_rows_per_layer(tiny_model):
    P, G = 7, 32
    cache = cache_for(tiny_model, P, G, kp=3, kr=2, rho=0.25)
    tokens = torch.randint(10, 90, (1, P + G))
    # forward: (prompt recomputed, response recomputed) in layers >= 1; layer 0 always full.
    # A forward that refreshes only the prompt V-verifies the response too (4 and 10), as
    # the published dLLM-Cache hook does.
    expected = {1: (P, G), 2: (0, 8), 3: (0, G), 4: (P, 8), 5: (0, G),
                6: (0, 8), 7: (P, G), 8: (0, 8), 9: (0, G), 10: (P, 8)}
    for forward in range(1, 11):
        cache.begin_forward()
        tiny_model.net(tokens, cache=cache)
        s0, s1 = cache.last_stats
        assert (s0.prompt_recomputed, s0.response_recomputed) == (P, G)
        p, r = expected[forward]
        assert (s1.prompt_recomputed, s1.response_recomputed) == (p, r), forward
        assert (s1.prompt_reused, s1.response_reused) == (P - p, G - r), forward
        # the tokens never change and layer 0 always refreshes, so layer 1's input and its
        # response V are those cached: every row's similarity is 1
        if r == 8:
            assert s1.similarity_threshold == pytest.approx(1.0, abs=1e-5), forward
        else:
            assert s1.similarity_threshold is None, forward


@torch.no_grad()
def test_each_case_counts_rows_over_the_batch_and_its_flops(tiny_model):
    """kp=2, kr=3 in layer 1: forward 1 refreshes both, 2 neither, 3 the prompt only, 4 the
    response only; layer 0 always refreshes. Two batch rows; forwards 2-4 are truncated to
    R=16 of the G=24 response rows, so V-verify picks int(16 * 0.25) = 4 rows per batch row."""
    net, P, G, R, B = tiny_model.net, 5, 24, 16, 2
    cfg = net.cfg
    cache = cache_for(tiny_model, P, G, kp=2, kr=3, rho=0.25)
    tokens = torch.randint(10, 90, (B, P + G))
    T = P + R
    verify_v = layer_flops(cfg, 0, 32, 0, 0, 0)  # new V for the 2 x 16 response rows
    # forward: length, layer 1's (prompt recomputed, prompt reused, response recomputed,
    # response reused, FLOPs)
    expected = {
        1: (P + G, (10, 0, 48, 0, layer_flops(cfg, 58, 0, 58, 29, 58))),
        2: (T, (0, 10, 8, 24, verify_v + layer_flops(cfg, 8, 0, 8, 21, 8))),
        3: (T, (10, 0, 8, 24, verify_v + layer_flops(cfg, 18, 0, 18, 21, 18))),
        4: (T, (0, 10, 32, 0, layer_flops(cfg, 32, 0, 32, 21, 32))),
    }
    for forward, (length, layer1) in expected.items():
        cache.begin_forward()
        net(tokens[:, :length], cache=cache, logits_from=P)
        s0, s1 = cache.last_stats
        assert (s0.prompt_recomputed, s0.prompt_reused, s0.response_recomputed, s0.response_reused) == \
            (10, 0, B * (length - P), 0), forward
        assert s0.flops == layer_flops(cfg, B * length, 0, B * length, length, B * length)
        assert (s1.prompt_recomputed, s1.prompt_reused, s1.response_recomputed, s1.response_reused,
                s1.flops) == layer1, forward
        assert (s1.similarity_threshold is not None) == (forward in (2, 3)), forward
        head = 2.0 * B * (length - P) * cfg.d_model * cfg.vocab_size
        assert net.forward_flops(B, length, cache, logits_from=P) == s0.flops + s1.flops + head
    assert cache.summary() == {"prompt_recomputed": [10, 0], "prompt_reused": [0, 10],
                               "response_recomputed": [32, 32], "response_reused": [0, 0],
                               "similarity_threshold": [None, None]}


@torch.no_grad()
def test_v_verify_recomputes_the_least_similar_rows(tiny_model):
    """Without refreshes (layer 0 included), layer 0's V of a row depends on its token alone:
    change 6 of the 24 response tokens and rho = 0.25 picks exactly those 6 rows (int(24 *
    0.25)). Their K is rewritten, every other row's K is kept, the whole response V is
    replaced, and the threshold is the highest similarity among the changed rows."""
    net, P, G = tiny_model.net, 6, 24
    block = net.transformer["blocks"][0]
    torch.manual_seed(3)
    first = torch.randint(10, 90, (1, P + G))
    second = first.clone()
    changed = torch.tensor([1, 4, 9, 10, 17, 23])
    second[0, P + changed] = (first[0, P + changed] - 10 + 37) % 80 + 10  # different tokens
    cache = cache_for(tiny_model, P, G, kp=100, kr=100, rho=0.25, refresh_first_layer=False)
    cache.begin_forward()
    net(first, cache=cache)
    k_before = cache.layers[0].k_r.clone()
    cache.begin_forward()
    net(second, cache=cache)

    def response_v(tokens):  # [G, kv_heads * head_dim], longhand
        n = block.attn_norm(net.transformer["wte"](tokens))
        return F.linear(n, block.v_proj.weight, block.v_proj.bias)[0, P:]

    v_new = response_v(second)
    sim = F.cosine_similarity(v_new.float(), response_v(first).float(), dim=-1)
    unchanged = torch.ones(G, dtype=torch.bool)
    unchanged[changed] = False
    assert sim[changed].max() < sim[unchanged].min()  # the premise: the changed rows are the least similar
    s0, s1 = cache.last_stats
    for s in (s0, s1):
        assert (s.prompt_recomputed, s.prompt_reused, s.response_recomputed, s.response_reused) == (0, P, 6, 18)
    assert s0.similarity_threshold == pytest.approx(float(sim[changed].max()), abs=1e-6)
    store = cache.layers[0]
    moved = (store.k_r[0] != k_before[0]).any(-1).any(0)  # [G]: rows whose K was rewritten
    assert moved.nonzero().flatten().tolist() == changed.tolist()
    assert torch.allclose(store.v_r[0].transpose(0, 1).reshape(G, -1), v_new, atol=1e-6, rtol=0)


def test_engine_records_cache_statistics_and_flops(tiny_model):
    base = dict(sampler="baseline", gen_length=32, block_length=32, steps=8)
    plain = generate(tiny_model, PROMPT, GenerationSettings(**base))
    cached = generate(tiny_model, PROMPT, GenerationSettings(**base, cache={"prompt_interval_steps": 4,
                                                                           "gen_interval_steps": 2,
                                                                           "transfer_ratio": 0.25}))
    assert plain.records[0].cache is None and plain.summary["cache_bytes"] is None
    rec = cached.records[1]  # forward 2: neither refreshes -> V-verify in layer 1
    assert rec.cache["response_recomputed"] == [32, 8] and rec.cache["prompt_reused"][1] == len(cached.prompt_ids)
    assert rec.flops < plain.records[1].flops
    assert cached.records[0].flops == pytest.approx(plain.records[0].flops)
    assert cached.summary["cache_bytes"] > 0 and cached.summary["flops"] < plain.summary["flops"]
    assert cached.settings["cache"] == {"kp": 4, "kr": 2, "rho": 0.25, "refresh_first_layer": True}


def test_no_state_leaks_between_runs_and_memory_is_freed(tiny_model):
    s = GenerationSettings(sampler="slowfast", gen_length=64, block_length=32, cache={"kp": 5, "kr": 2})
    run = Run(tiny_model, PROMPT, s)
    for _ in run:
        pass
    first = run.trace
    assert all(not layer.tensors() for layer in run.cache.layers) and run.cache.forward == 0
    again = generate(tiny_model, PROMPT, s)
    assert again.tokens == first.tokens
    assert [r.cache for r in again.records] == [r.cache for r in first.records]


@torch.no_grad()
def test_clear_releases_the_tensors(tiny_model):
    cache = cache_for(tiny_model, 5, 16)
    cache.begin_forward()
    tiny_model.net(torch.randint(10, 90, (1, 21)), cache=cache)
    ref = weakref.ref(cache.layers[0].k_r)
    cache.clear()
    gc.collect()
    assert ref() is None and cache.nbytes() == 0


@pytest.mark.parametrize("params, message", [
    ({"kp": 0}, "kp: 0"), ({"gen_interval_steps": -1}, "kr: -1"), ({"rho": 1.5}, r"rho: 1.5.*\[0, 1\]"),
    ({"interval": 3}, "interval: unknown cache parameter"),
])
def test_bad_cache_parameters(tiny_model, params, message):
    with pytest.raises(ValueError, match=message):
        Run(tiny_model, PROMPT, GenerationSettings(cache=params))


def test_paper_presets_have_the_published_settings_and_schedules():
    presets = {name: CacheSettings(**preset) for name, preset in CACHE_PRESETS.items()}
    assert {name: (c.kp, c.kr, c.rho, c.refresh_first_layer) for name, c in presets.items()} == {
        "slowfast-gsm8k": (15, 1, 0.0, True), "slowfast-headline": (100, 5, 0.25, True),
        "slowfast-headline-long": (500, 30, 0.25, True), "llada-gsm8k": (50, 7, 0.25, True),
        "llada-demo": (100, 7, 0.25, True), "dream-demo": (100, 7, 0.25, True)}
    headline = presets["slowfast-headline"]
    assert [headline.refresh(f) for f in (1, 2, 6, 100, 101, 106)] == [
        (True, True), (False, False), (False, True), (False, False), (True, True), (False, True)]
    # (prompt refreshes, response refreshes) over 1000 forwards: ceil(1000 / kp), ceil(1000 / kr)
    counts = {name: tuple(map(sum, zip(*(c.refresh(f) for f in range(1, 1001))))) for name, c in presets.items()}
    assert counts == {"slowfast-gsm8k": (67, 1000), "slowfast-headline": (10, 200),
                      "slowfast-headline-long": (2, 34), "llada-gsm8k": (20, 143), "llada-demo": (10, 143),
                      "dream-demo": (10, 143)}


@torch.no_grad()
def test_prompt_only_refresh_verifies_the_response_too(tiny_model):
    """A forward that refreshes only the prompt (here the 2nd: kp=1, kr=100) V-verifies the
    response as the published hook does. With rho=1 every response row is recomputed, so
    the forward equals an uncached one; reusing the response untouched would not."""
    net = tiny_model.net
    P, G = 6, 24
    first = torch.randint(10, 90, (1, P + G))
    second = first.clone()
    second[0, P:P + 12] = torch.randint(10, 90, (12,))  # the response moved on
    cache = cache_for(tiny_model, P, G, kp=1, kr=100, rho=1.0, refresh_first_layer=False)
    cache.begin_forward()
    net(first, cache=cache)
    cache.begin_forward()
    got = net(second, cache=cache)
    assert all((s.prompt_recomputed, s.response_recomputed) == (P, G) for s in cache.last_stats)
    assert torch.allclose(got, net(second), atol=1e-5, rtol=0)


@torch.no_grad()
def test_rho_zero_leaves_the_cached_response_untouched(tiny_model):
    """rho = 0 is pure reuse: a forward that refreshes nothing (or only the prompt) must
    not overwrite the cached response V (the published hook guards it by ``transfer``)."""
    net = tiny_model.net
    P, G = 6, 24
    first = torch.randint(10, 90, (1, P + G))
    second = first.clone()
    second[0, P:] = torch.randint(10, 90, (G,))
    cache = cache_for(tiny_model, P, G, kp=2, kr=100, rho=0.0, refresh_first_layer=False)
    cache.begin_forward()
    net(first, cache=cache)
    before = [store.v_r.clone() for store in cache.layers]
    for _ in range(3):  # forward 2 refreshes the prompt only, forward 3 nothing, 4 the prompt
        cache.begin_forward()
        net(second, cache=cache)
        assert all(s.response_recomputed == 0 for s in cache.last_stats)
    assert all(torch.equal(b, store.v_r) for b, store in zip(before, cache.layers))


def test_rms_norm_scales_after_casting_back_as_llada_does():
    """In bf16 LLaDA's RMSNorm rounds the normalised value to bf16 and then multiplies by
    the weight; multiplying in float32 first rounds differently."""
    from slowfast.models.transformer import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(64, 1e-5).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64) * 3)
    x = (torch.randn(8, 64) * 5).to(torch.bfloat16)
    xf = x.float()
    normalised = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16)
    assert torch.equal(norm(x), norm.weight * normalised)
    assert not torch.equal(norm(x), (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)
                                     * norm.weight.float()).to(torch.bfloat16))
