"""dLLM-Cache inside the transformer: exactness, the V-verify reference, counters, hygiene."""
import gc
import weakref

import pytest
import torch

from slowfast.cache import CACHE_PRESETS, CacheSettings, FeatureCache
from slowfast.engine import GenerationSettings, Run, generate

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
        assert (s1.similarity_threshold is not None) == (r == 8)


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


def test_paper_presets_are_valid():
    assert CacheSettings(**CACHE_PRESETS["slowfast-headline"]).refresh(6) == (False, True)
    for preset in CACHE_PRESETS.values():
        CacheSettings(**preset)


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
