"""LLaDA2.x (llada2_moe) in our network, its block-causal KV cache and the llada2 sampler, on a
tiny random checkpoint written in the official layout (nothing downloaded)."""
from __future__ import annotations

import builtins
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slowfast.commands.cli import main as cli_main
from slowfast.engine import GenerationSettings, generate
from slowfast.models import ModelLoadError, load_model
from slowfast.models import llada2
from slowfast.models.loading import model_info
from slowfast.models.tiny import LLADA2_CODE_FILES, REMOTE_CODE_TRAP, write_tiny_llada2_checkpoint
from slowfast.samplers import Layout, Observation, make_policy
from slowfast.trace import Trace

PROMPT = "Hello there"


@pytest.fixture(scope="module")
def l2_dir(tmp_path_factory):
    return write_tiny_llada2_checkpoint(tmp_path_factory.mktemp("llada2") / "tiny-llada2")


@pytest.fixture(scope="module")
def l2(l2_dir):
    return load_model(str(l2_dir), device="cpu")


@pytest.fixture
def l2_copy(l2_dir, tmp_path):
    return shutil.copytree(l2_dir, tmp_path / "copy")


# --- the checkpoint and loading -----------------------------------------------------------------

def test_the_tiny_checkpoint_has_the_official_layout(l2_dir):
    config = json.loads((l2_dir / "config.json").read_text())
    assert config["architectures"] == ["LLaDA2MoeModelLM"] and config["model_type"] == "llada2_moe"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_llada2_moe.LLaDA2MoeModelLM"
    names = set(json.loads((l2_dir / "model.safetensors.index.json").read_text())["weight_map"])
    for name in ("model.word_embeddings.weight", "model.norm.weight", "lm_head.weight",
                 "model.layers.0.attention.query_key_value.weight", "model.layers.0.attention.query_layernorm.weight",
                 "model.layers.0.attention.key_layernorm.weight", "model.layers.0.attention.dense.weight",
                 "model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.gate.weight",
                 "model.layers.1.mlp.gate.expert_bias", "model.layers.1.mlp.experts.7.down_proj.weight",
                 "model.layers.1.mlp.shared_experts.up_proj.weight", "model.layers.2.input_layernorm.weight"):
        assert name in names, name
    assert "model.layers.0.mlp.gate.weight" not in names  # first_k_dense_replace = 1: layer 0 is dense
    for code in LLADA2_CODE_FILES:
        assert (l2_dir / code).read_text() == REMOTE_CODE_TRAP


def test_loads_offline_without_its_remote_code(l2_dir, monkeypatch):
    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):
        assert "llada2_moe" not in name, f"remote code imported: {name}"
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model(str(l2_dir), device="cpu")
    vocab = model.tokenizer.get_vocab()
    assert model.family == "llada2" and model.block_causal and not model.supports_cache
    assert model.mask_id == vocab["<|mask|>"] and vocab["<|endoftext|>"] in model.eos_ids
    assert model.n_layers == 3 and model.max_length == 512 and model.vocab_size % 16 == 0
    info = model_info(str(l2_dir))
    assert info.family == "llada2" and not info.cache  # sizes counted from the files: the routers' biases too
    assert info.parameters == sum(t.numel() for t in model.net.state_dict().values())


def test_forward_shapes_and_float32_logits(l2):
    ids = l2.encode_prompt(PROMPT)
    tokens = torch.tensor([ids + [l2.mask_id] * 16])
    out = l2.forward(tokens, start=len(ids), blocks=l2.block_context(8, len(ids)))
    assert out.shape == (1, 16, l2.vocab_size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert l2.forward(torch.cat([tokens, tokens]), start=0).shape == (2, tokens.shape[1], l2.vocab_size)


@pytest.mark.parametrize("change, words", [
    (lambda c: c.update(hidden_act="gelu"), "hidden_act='gelu'"),
    (lambda c: c.update(norm_head=True), "norm_head=true"),
    (lambda c: c.update(use_qk_norm=False), "use_qk_norm=false"),
    (lambda c: c.update(score_function="softmax"), "score_function='softmax'"),
    (lambda c: c.update(n_group=3), "num_experts=8 in n_group=3 groups"),
    (lambda c: c.update(num_key_value_heads=3), "not divisible by num_key_value_heads=3"),
    (lambda c: c.update(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling="),
    (lambda c: c.update(hidden_size="64"), "hidden_size='64'"),
])
def test_a_config_the_published_code_computes_otherwise_is_refused_by_its_key(l2_copy, change, words):
    path = l2_copy / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as err:
        load_model(str(l2_copy), device="cpu")
    assert str(path) in str(err.value) and words in str(err.value)


def test_a_missing_or_misshapen_tensor_is_named(l2_copy):
    from safetensors.torch import load_file, save_file

    index = json.loads((l2_copy / "model.safetensors.index.json").read_text())
    key = "model.layers.2.mlp.gate.expert_bias"
    shard = l2_copy / index["weight_map"][key]
    tensors = load_file(str(shard))
    save_file({k: (v[:4] if k == key else v) for k, v in tensors.items()}, str(shard), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=f"{key} has shape \\(4,\\), config.json implies \\(8,\\)"):
        load_model(str(l2_copy), device="cpu")
    save_file({k: v for k, v in tensors.items() if k != key}, str(shard), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=f"{key} is missing"):
        load_model(str(l2_copy), device="cpu")


def test_config_defaults_are_llada2moeconfigs():
    cfg = llada2.Config.from_json({"num_key_value_heads": 4, "moe_intermediate_size": 64})
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (30592, 1024, 24, 16)
    assert cfg.use_bias and not cfg.use_qkv_bias and cfg.use_qk_norm and cfg.rms_norm_eps == 1e-5
    assert (cfg.num_experts, cfg.num_experts_per_tok, cfg.n_group, cfg.topk_group) == (16, 2, 8, 4)
    assert cfg.routed_scaling_factor == 2.5 and cfg.partial_rotary_factor == 0.5 and cfg.rope_dim == 32
    assert not cfg.moe_layer(-1) and cfg.moe_layer(0)  # first_k_dense_replace 0: every layer a MoE


# --- the network against a longhand of the published computation ------------------------------

def longhand_moe(moe: llada2.MoE, cfg: llada2.Config, x: torch.Tensor) -> torch.Tensor:
    """One token at a time, as modeling_llada2_moe.py's gate and moe_infer describe it."""
    out = []
    for h in x.reshape(-1, x.shape[-1]):
        scores = torch.sigmoid(h.float() @ moe.gate.weight.float().T)
        choice = scores + moe.gate.expert_bias
        per = cfg.num_experts // cfg.n_group
        group_best2 = [sorted(choice[g * per:(g + 1) * per].tolist())[-2:] for g in range(cfg.n_group)]
        groups = sorted(range(cfg.n_group), key=lambda g: -sum(group_best2[g]))[: cfg.topk_group]
        allowed = [e for e in range(cfg.num_experts) if e // per in groups]
        chosen = sorted(allowed, key=lambda e: -float(choice[e]))[: cfg.num_experts_per_tok]
        w = torch.stack([scores[e] for e in chosen])
        w = w / (w.sum() + 1e-20) * cfg.routed_scaling_factor
        y = sum(wi * moe.experts[e](h).float() for wi, e in zip(w, chosen))
        out.append(y.to(h.dtype) + moe.shared_experts(h))
    return torch.stack(out).view_as(x)


def test_moe_routing_matches_a_longhand_of_the_published_router(l2):
    cfg = l2.net.cfg
    moe = l2.net.model.layers[1].mlp
    assert isinstance(moe, llada2.MoE) and bool(moe.gate.expert_bias.abs().sum() > 0)
    x = torch.randn(1, 12, cfg.hidden_size, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        torch.testing.assert_close(moe(x), longhand_moe(moe, cfg, x), rtol=1e-4, atol=1e-4)


def test_partial_rope_rotates_only_the_first_dimensions():
    cos, sin = llada2.rope_tables(8, 600000.0, 5, "cpu")
    x = torch.randn(1, 2, 5, 16)
    y = llada2.apply_partial_rope(x, cos, sin)
    assert torch.equal(y[..., 8:], x[..., 8:]) and torch.equal(y[:, :, 0], x[:, :, 0])  # position 0: identity
    assert not torch.allclose(y[:, :, 1:, :8], x[:, :, 1:, :8])
    torch.testing.assert_close(y[..., :8].norm(dim=-1), x[..., :8].norm(dim=-1))  # a rotation


def longhand_attention(layer: llada2.DecoderLayer, cfg: llada2.Config, x: torch.Tensor, allowed: torch.Tensor):
    """The published attention: fused qkv, per-head RMSNorm on q and k, partial RoPE, repeat_kv, an
    additive mask, softmax in float32, dense."""
    att = layer.attention
    T = x.shape[1]
    H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.dim
    qkv = att.query_key_value(x).view(1, T, H + 2 * KV, D)
    q, k, v = (t.transpose(1, 2) for t in qkv.split([H, KV, KV], dim=-2))
    q, k = att.query_layernorm(q), att.key_layernorm(k)
    cos, sin = llada2.rope_tables(cfg.rope_dim, cfg.rope_theta, T, "cpu")
    q, k = llada2.apply_partial_rope(q, cos, sin), llada2.apply_partial_rope(k, cos, sin)
    k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
    scores = q @ k.transpose(2, 3) / D ** 0.5 + torch.where(allowed, 0.0, float("-inf"))
    y = F.softmax(scores, dim=-1, dtype=torch.float32) @ v
    return att.dense(y.transpose(1, 2).reshape(1, T, H * D))


def test_a_layer_matches_a_longhand_with_the_published_block_mask(l2):
    cfg, layer = l2.net.cfg, l2.net.model.layers[2]
    x = torch.randn(1, 12, cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    ids = torch.arange(12) // 4  # generate's mask: tril over blocks of 4, repeated
    allowed = ids[:, None] >= ids[None, :]
    cos, sin = llada2.rope_tables(cfg.rope_dim, cfg.rope_theta, 12, "cpu")
    with torch.no_grad():
        ours, _, _ = layer(x, cos, sin, allowed)
        h = x + longhand_attention(layer, cfg, layer.input_layernorm(x), allowed)
        want = h + longhand_moe(layer.mlp, cfg, layer.post_attention_layernorm(h))
    torch.testing.assert_close(ours, want, rtol=1e-4, atol=1e-4)


# --- block-causal attention and its KV cache -----------------------------------------------------

def test_block_ids_count_the_prompt_from_0_and_the_generation_from_its_first_token():
    assert llada2.BlockContext(4, 8).block_ids(16, "cpu").tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert llada2.BlockContext(4, 6).block_ids(14, "cpu").tolist() == [0] * 4 + [1] * 2 + [2] * 4 + [3] * 4


def test_a_later_block_never_changes_an_earlier_blocks_logits(l2):
    P = 8
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(10, 100, (1, P + 24), generator=g)
    logits = l2.forward(tokens, blocks=l2.block_context(8, P))
    later = tokens.clone()
    later[0, P + 16:] = torch.randint(10, 100, (8,), generator=g)  # the third generated block
    changed = l2.forward(later, blocks=l2.block_context(8, P))
    # equal up to float32 rounding: an expert's matmul over another set of tokens may round differently
    torch.testing.assert_close(logits[:, : P + 16], changed[:, : P + 16], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits[:, P + 16:], changed[:, P + 16:])
    within = tokens.clone()
    within[0, P + 15] = (tokens[0, P + 15] + 1) % 100  # the end of the second block: its whole block sees it
    moved = l2.forward(within, blocks=l2.block_context(8, P))
    torch.testing.assert_close(logits[:, : P + 8], moved[:, : P + 8], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits[:, P + 8:P + 15], moved[:, P + 8:P + 15])


def test_the_kv_cached_path_equals_the_uncached_forward(l2):
    P, B = 6, 8
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(10, 100, (1, P + 32), generator=g)
    cached = l2.block_context(B, P)
    for frozen in (0, 8, 8, 16, 24, 32):  # blocks are finished one by one
        cached.frozen = P + frozen
        tokens[0, P + frozen:] = torch.randint(10, 100, (32 - frozen,), generator=g)  # the rest still moves
        got = l2.forward(tokens, start=P, blocks=cached)
        want = l2.forward(tokens, start=P, blocks=llada2.BlockContext(B, P, kv=False))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert cached.cached == P + frozen  # the finished prefix is kept
    assert cached.rows_computed == 8  # the last forward computed only the block that was not yet final
    tokens[0, 2] += 1  # a changed prompt: the cache is dropped, not reused
    cached.frozen = P + 32
    torch.testing.assert_close(l2.forward(tokens, start=P, blocks=cached),
                               l2.forward(tokens, start=P, blocks=llada2.BlockContext(B, P, kv=False)),
                               rtol=1e-5, atol=1e-5)
    assert cached.rows_computed == P + 32


def test_dllm_cache_is_refused_for_llada2(l2):
    s = GenerationSettings(sampler="threshold", gen_length=16, block_length=8, cache={})
    with pytest.raises(ValueError, match="dLLM-Cache is not available"):
        generate(l2, PROMPT, s)


# --- the llada2 sampler on scripted confidences --------------------------------------------------

def policy(**params):
    p = make_policy("llada2", params)
    p.reset(Layout(16, 8, 16), np.random.default_rng(0))
    return p


def obs(mask, conf, changed=None):
    mask = np.asarray(mask, dtype=bool)
    return Observation(mask=mask, confidence=np.asarray(conf, dtype=np.float32),
                       changed=None if changed is None else np.asarray(changed, dtype=bool))


def test_m2t_unmasks_every_masked_position_of_the_block_strictly_above_the_threshold():
    p = policy(m2t_threshold=0.7, edit_threshold=1.0)
    conf = [0.9, 0.7, 0.71, 0.2, 0.95, 0.1, 0.3, 0.8] + [0.99] * 8  # the next block's never count
    d = p.decide(obs([True] * 16, conf))
    assert d.decode.tolist() == [0, 2, 4, 7] and d.stage == "m2t" and d.block == 0 and d.span == (0, 8)
    assert d.next_extent == 8  # later blocks are not fed


def test_fewer_than_min_transfer_above_takes_the_most_confident():
    p = policy(m2t_threshold=0.9, min_transfer=3, edit_threshold=1.0)
    d = p.decide(obs([True] * 16, [0.95, 0.5, 0.6, 0.2, 0.1, 0.7, 0.3, 0.4] + [1.0] * 8))
    assert d.decode.tolist() == [0, 2, 5]
    d = p.decide(obs([False, True] + [False] * 5 + [True] + [True] * 8, [0.1] * 16))
    assert d.decode.tolist() == [1, 7]  # only two masks left


def test_t2t_edits_decoded_positions_of_the_block_predicted_otherwise_above_the_edit_threshold():
    p = policy(m2t_threshold=0.7, edit_threshold=0.5)
    mask = [False, False, False, True, True, False, False, False] + [True] * 8
    conf = [0.9, 0.4, 0.6, 0.8, 0.2, 0.5, 0.99, 0.7] + [0.9] * 8
    changed = [True, True, False, False, False, True, True, True] + [False] * 8
    d = p.decide(obs(mask, conf, changed))
    assert d.decode.tolist() == [3] and d.edit.tolist() == [0, 6, 7]  # 0.4 and 0.5 are not above 0.5
    assert d.info == {"edits": 3}


def test_a_full_block_takes_post_steps_until_nothing_is_edited():
    p = policy(m2t_threshold=0.5, edit_threshold=0.5, max_post_steps=16)
    full = [False] * 8 + [True] * 8
    d = p.decide(obs([True] * 8 + [True] * 8, [0.9] * 16))  # fills block 0
    assert d.decode.tolist() == list(range(8)) and p.current_block() == 0  # the next forward is a post step
    d = p.decide(obs(full, [0.9] * 16, [True] + [False] * 15))  # a post step that edits
    assert d.stage == "t2t" and d.edit.tolist() == [0] and p.current_block() == 0 and d.info["post_step"] == 1
    d = p.decide(obs(full, [0.9] * 16, [False] * 16))  # nothing to edit: the block is finished
    assert d.edit.size == 0 and p.current_block() == 1 and d.next_extent == 16 and not p.done(np.array(full))


def test_max_post_steps_bounds_the_forwards_on_a_full_block():
    p = policy(m2t_threshold=0.5, edit_threshold=0.5, max_post_steps=2)
    full = [False] * 8 + [True] * 8
    p.decide(obs([True] * 16, [0.9] * 16))
    for step in (1, 2):
        d = p.decide(obs(full, [0.9] * 16, [True] * 8 + [False] * 8))
        assert d.edit.size == 8 and d.info["post_step"] == step
    assert p.current_block() == 1  # a third post step would be one too many
    p0 = policy(m2t_threshold=0.5, max_post_steps=0)
    p0.decide(obs([True] * 16, [0.9] * 16))
    assert p0.current_block() == 1  # LLaDA2.0: finished as soon as it is full


def test_the_run_is_done_after_the_last_block():
    p = policy(m2t_threshold=0.5, max_post_steps=0)
    p.decide(obs([True] * 16, [0.9] * 16))
    d = p.decide(obs([False] * 8 + [True] * 8, [0.9] * 16))
    assert d.block == 1 and d.decode.tolist() == list(range(8, 16))
    assert p.done(np.zeros(16, bool)) and p.current_block() is None and d.next_extent == 16


def test_llada2_parameters_are_checked_and_take_the_published_names():
    p = make_policy("llada2", {"editing_threshold": 0.3, "num_to_transfer": 2, "max_post_steps": 4})
    assert (p.edit_threshold, p.min_transfer, p.max_post_steps, p.m2t_threshold) == (0.3, 2, 4, 0.7)
    for bad, words in (({"m2t_threshold": 1.5}, "m2t_threshold"), ({"min_transfer": 0}, "min_transfer"),
                       ({"threshold": 0.5}, "unknown parameter")):
        with pytest.raises(ValueError, match=words):
            make_policy("llada2", bad)


# --- through the engine, the CLI, export and replay ----------------------------------------------

def test_llada2_decodes_with_editing_and_its_trace_replays(l2, tmp_path):
    s = GenerationSettings(sampler="llada2", gen_length=32, block_length=8,
                           params={"m2t_threshold": 0.5, "edit_threshold": 0.3, "max_post_steps": 4})
    trace = generate(l2, PROMPT, s)
    assert trace.summary["finished"] and trace.summary["error"] is None
    edits = [(r.step, p) for r in trace.records for p in r.edited]
    assert edits, "the tiny model edits some decoded tokens at this setting"
    canvas = [int(t) for t in trace.records[-1].canvas]
    assert canvas == trace.tokens and l2.mask_id not in trace.tokens
    for r in trace.records:  # every edit wrote the step's prediction; every step saw one block only
        assert all(int(r.canvas[p]) == int(r.argmax[p]) for p in r.edited)
        assert r.span == (8 * r.block, 8 * r.block + 8) and r.stage in ("m2t", "t2t")
    assert [r.block for r in trace.records] == sorted(r.block for r in trace.records)
    path = tmp_path / "t.json"
    trace.save(path)
    again = Trace.load(path)
    assert again.tokens == trace.tokens and [r.edited for r in again.records] == [r.edited for r in trace.records]
    assert again.to_dict() == trace.to_dict()
    rerun = generate(l2, PROMPT, GenerationSettings.from_dict(again.settings))
    assert rerun.tokens == trace.tokens


@pytest.mark.parametrize("extra", [{}, {"cfg_scale": 1.0, "temperature": 0.5, "seed": 3}])
def test_the_engines_kv_cache_does_not_change_a_run(l2, monkeypatch, extra):
    s = GenerationSettings(sampler="llada2", gen_length=32, block_length=8, params={"edit_threshold": 0.4}, **extra)
    cached = generate(l2, PROMPT, s)
    monkeypatch.setattr(l2.net, "block_context", lambda b, p: llada2.BlockContext(b, p, kv=False))
    plain = generate(l2, PROMPT, s)
    assert cached.tokens == plain.tokens
    for a, b in zip(cached.records, plain.records, strict=True):
        assert a.decoded == b.decoded and a.edited == b.edited and np.array_equal(a.argmax, b.argmax)
        np.testing.assert_allclose(a.confidence.astype(float), b.confidence.astype(float), atol=2e-3)
    assert sum(r.flops for r in cached.records) < sum(r.flops for r in plain.records)


@pytest.mark.parametrize("sampler, params", [("slowfast", {}), ("threshold", {}), ("baseline", {}),
                                             ("llada2", {"edit_threshold": 1.0, "max_post_steps": 0})])
def test_every_sampler_decodes_llada2(l2, sampler, params):
    steps = {"steps": 32} if sampler == "baseline" else {}
    s = GenerationSettings(sampler=sampler, gen_length=32, block_length=16, params=params, **steps)
    trace = generate(l2, PROMPT, s)
    assert trace.summary["finished"] and l2.mask_id not in trace.tokens
    assert trace.summary["nfe"] <= 32


def test_cli_generates_with_llada2(l2_dir, tmp_path, capsys):
    for args in (["--sampler", "llada2", "--editing-threshold", "0.4", "--num-to-transfer", "2"],
                 ["--sampler", "slowfast"], ["--sampler", "threshold", "--threshold", "0.8"]):
        out = tmp_path / f"{args[1]}.json"
        code = cli_main(["generate", "--model", str(l2_dir), "--prompt", "Hi", "--gen-length", "16",
                         "--block-length", "8", "--device", "cpu", "--trace", str(out), *args])
        assert code == 0, capsys.readouterr().err
        trace = Trace.load(out)
        assert trace.settings["sampler"] == args[1] and trace.summary["finished"]
    assert Trace.load(tmp_path / "llada2.json").settings["params"]["min_transfer"] == 2


def test_the_views_and_the_player_show_each_edit(l2):
    from visuals.player import step_delta
    from visuals.view import TraceView

    s = GenerationSettings(sampler="llada2", gen_length=16, block_length=8,
                           params={"m2t_threshold": 0.5, "edit_threshold": 0.3, "max_post_steps": 2})
    trace = generate(l2, PROMPT, s)
    edited_steps = [i for i, r in enumerate(trace.records) if r.edited]
    assert edited_steps
    for i in range(len(trace.records)):  # the views' tokens as of each step are the canvas after it
        view = TraceView(trace, i)
        canvas = np.asarray(trace.records[i].canvas)
        masked = view.decoded_at < 0
        assert np.array_equal(view.tokens[~masked], canvas[~masked])
    assert TraceView(trace).tokens.tolist() == trace.tokens
    i = edited_steps[0]
    d = step_delta(trace, i)
    assert d["ed"] == trace.records[i].edited and d["ed_tok"] == [int(trace.records[i].argmax[p]) for p in d["ed"]]
    assert all(str(t) in d["strs"] or str(t) in step_delta(trace, 0)["strs"] for t in d["ed_tok"])
    assert "ed" not in step_delta(trace, 0) or trace.records[0].edited


def test_the_browser_player_draws_each_edit(l2, tmp_path):
    """The exported page in headless Chromium: at every step the canvas shows, for each decoded
    position, the token of the canvas after that step (edits included). Skipped without Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if chromium is None:
        pytest.skip("no Chromium binary (apt-get install chromium)")
    from visuals.player import player_html, whole_run

    s = GenerationSettings(sampler="llada2", gen_length=16, block_length=8,
                           params={"m2t_threshold": 0.5, "edit_threshold": 0.3, "max_post_steps": 2})
    trace = generate(l2, PROMPT, s)
    assert any(r.edited for r in trace.records)
    page_file = tmp_path / "run.html"
    page_file.write_text(player_html([whole_run(trace, "export")], "llada2"))
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(page_file.as_uri())
            for i, r in enumerate(trace.records):
                shown = page.evaluate("""(s) => { p.show(s); const run = p.run;
                    return [...document.querySelectorAll('.sf-cell')].map((c, pos) => {
                      const at = run.decodedAt[pos];
                      return at >= 0 && at <= s ? [run.tokAt(pos, s), c.textContent === run.str(run.tokAt(pos, s))[1]]
                                                : null; }); }""", i)
                for pos, cell in enumerate(shown):
                    if cell is not None:
                        assert cell == [int(r.canvas[pos]), True], (i, pos)
        finally:
            browser.close()


def test_the_app_runs_llada2_step_by_step_exports_and_replays(l2_dir):
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import app  # the Gradio app's functions, in-process (as tests/test_app.py drives them)
    from slowfast.session import Controls

    controls = Controls(gen_length=16, block_length=8, sampler="llada2", edit_threshold=0.3, m2t_threshold=0.5,
                        max_post_steps=2)
    values = [getattr(controls, n) for n in app.CONTROL_NAMES]
    state: dict = {}
    frames = list(app.on_run(str(l2_dir), "Hi", state, *values))
    trace = state["trace"]
    assert trace.summary["finished"] and trace.settings["sampler"] == "llada2" and frames[-1][1] == trace.text
    messages = [json.loads(f[2]) for f in frames if isinstance(f[2], str) and f[2]]
    deltas = [d for m in messages for d in m.get("steps", [])]
    assert [d["i"] for d in deltas] == list(range(len(trace.records)))  # every step streamed, in order
    assert any(d.get("ed") for d in deltas) and {d["stage"] for d in deltas} <= {"m2t", "t2t"}
    message, files = app.on_export(state)
    fresh: dict = {}
    out = app.on_replay(files[0], fresh)
    assert fresh["trace"].to_dict() == Trace.load(files[0]).to_dict()
    prompt, model, restored = out[4], out[5], out[6:]
    restored = [c.get("value", getattr(Controls(), n)) for c, n in zip(restored, app.CONTROL_NAMES)]
    again: dict = {}
    for _ in app.on_run(model["value"], prompt["value"], again, *restored):
        pass
    assert again["trace"].tokens == trace.tokens and again["trace"].settings == trace.settings


def test_the_explanation_says_what_each_llada2_step_did(l2):
    from visuals.explain import explain_sentences

    s = GenerationSettings(sampler="llada2", gen_length=16, block_length=8,
                           params={"m2t_threshold": 0.5, "edit_threshold": 0.3, "max_post_steps": 2})
    trace = generate(l2, PROMPT, s)
    for i, r in enumerate(trace.records):
        text = " ".join(explain_sentences(trace, i))
        assert f"block {r.block} [{8 * r.block}, {8 * r.block + 8})" in text
        if r.stage == "m2t":
            assert f"This forward unmasked {len(r.decoded)}:" in text
        else:
            assert f"post step {r.info['post_step']} of at most 2" in text
        if r.edited:
            assert f"{len(r.edited)} decoded position" in text and "took the model's new prediction" in text
        else:
            assert "nothing was edited" in text
        if i + 1 < len(trace.records) and trace.records[i + 1].block != r.block:
            assert f"the next forward works on block {trace.records[i + 1].block}" in text
    off = generate(l2, PROMPT, GenerationSettings(sampler="llada2", gen_length=8, block_length=8,
                                                  params={"edit_threshold": 1.0, "max_post_steps": 0}))
    assert "Editing is off" in " ".join(explain_sentences(off, 0))
