"""Dream-v0 in our transformer: the official layout, the network against transformers' Qwen2,
the shifted logits, Dream's own decoding, SlowFast's Dream variant against a longhand oracle
of the published loop, and dLLM-Cache through the GQA + bias path. Everything on tiny
random-weight checkpoints written in Dream's exact layout (no download)."""
import builtins
import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from slowfast.cache import CacheSettings, FeatureCache
from slowfast.commands.cli import main as cli_main
from slowfast.engine import GenerationSettings, generate
from slowfast.models import ModelConfig, ModelLoadError, Transformer, load_model
from slowfast.models.dllm import DLLM
from slowfast.models.loading import (DREAM_7B, KNOWN_MODELS, LLADA_8B, check_memory, memory_needed,
                                     parameter_count)
from slowfast.models.tiny import REMOTE_CODE_TRAP, write_tiny_dream_checkpoint
from slowfast.samplers import Layout, Observation, make_policy
from slowfast.samplers.base import Scoring
from slowfast.samplers.scoring import score_logits
from slowfast.trace import Trace

PROMPT = "What is 2+2?"


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory):
    return write_tiny_dream_checkpoint(tmp_path_factory.mktemp("tiny-dream"))


@pytest.fixture(scope="module")
def dream(dream_dir):
    return load_model(str(dream_dir), device="cpu")


@pytest.fixture(scope="module")
def peaky_dream(tmp_path_factory):
    """Output layer scaled up: many positions above 0.9, so SlowFast decodes in parallel."""
    return load_model(str(write_tiny_dream_checkpoint(tmp_path_factory.mktemp("peaky-dream"), seed=1,
                                                      logit_scale=40.0)), device="cpu")


@pytest.fixture(scope="module")
def staircase_dream(tmp_path_factory):
    """A seed and scale whose SlowFast run on the chat prompt has a span short of the canvas
    end, so its fast stage feeds truncated canvases."""
    return load_model(str(write_tiny_dream_checkpoint(tmp_path_factory.mktemp("staircase-dream"), seed=1,
                                                      logit_scale=2.0)), device="cpu")


@pytest.fixture
def dream_copy(dream_dir, tmp_path):
    return shutil.copytree(dream_dir, tmp_path / "dream")


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def shifted(logits):
    """Dream's generate: the logits of position i are row i - 1's (row 0 keeps its own)."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


# --- the layout and the loader ----------------------------------------------------------------

def test_the_tiny_checkpoint_has_dreams_official_layout(dream_dir):
    index = json.loads((dream_dir / "model.safetensors.index.json").read_text())
    names = set(index["weight_map"])
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} <= names
    for part in ("input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                 "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias", "self_attn.o_proj.weight",
                 "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"):
        assert f"model.layers.1.{part}" in names
    assert "model.layers.0.self_attn.o_proj.bias" not in names and len(set(index["weight_map"].values())) > 1
    config = json.loads((dream_dir / "config.json").read_text())
    assert config["model_type"] == "Dream" and config["architectures"] == ["DreamModel"] and "auto_map" in config
    assert {"hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers", "intermediate_size",
            "rope_theta", "rms_norm_eps", "mask_token_id", "tie_word_embeddings", "max_position_embeddings",
            "vocab_size"} <= set(config)
    tok = json.loads((dream_dir / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] == "DreamTokenizer" and "auto_map" in tok and tok["mask_token"] == "<|mask|>"
    assert (dream_dir / "vocab.json").is_file() and (dream_dir / "merges.txt").is_file()
    assert (dream_dir / "tokenization_dream.py").read_text() == REMOTE_CODE_TRAP


def test_dream_loads_without_its_remote_code_and_without_asking(dream_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the loader asked a question on stdin")

    monkeypatch.setattr(builtins, "input", refuse)
    model = load_model(str(dream_dir), device="cpu")  # the folder's *.py raise if imported
    assert model.family == "dream" and model.shift_logits and model.supports_cache
    assert type(model.tokenizer).__name__ == "Qwen2Tokenizer"


def test_config_facts_come_from_config_json(dream, dream_copy):
    cfg = dream.net.cfg
    assert (cfg.n_heads, cfg.kv_heads, cfg.include_qkv_bias, cfg.include_bias) == (4, 2, True, False)
    assert cfg.rope_theta == 1e6 and cfg.rms_norm_eps == 1e-6 and cfg.max_sequence_length == 512
    assert dream.net.transformer["blocks"][0].attn_out.bias is None
    tokens = torch.tensor([[5, 40, 77, 3, 90, 12]])
    edit_json(dream_copy / "config.json", lambda c: c.update(rope_theta=10000.0, rms_norm_eps=1e-2))
    other = load_model(str(dream_copy), device="cpu")
    assert other.net.cfg.rope_theta == 10000.0 and other.net.cfg.rms_norm_eps == 1e-2
    assert not torch.allclose(other.net(tokens), dream.net(tokens))


def test_special_tokens_come_from_the_tokenizer(dream, dream_copy):
    tok = dream.tokenizer
    assert dream.mask_id == tok.convert_tokens_to_ids("<|mask|>") == tok.mask_token_id
    assert {tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")} <= dream.eos_ids
    assert dream.mask_id not in dream.eos_ids
    # another tokenizer mask token (and config.json agreeing): the loader follows it
    other_id = tok.convert_tokens_to_ids("<|fim_pad|>")
    edit_json(dream_copy / "tokenizer_config.json", lambda c: c.update(mask_token="<|fim_pad|>"))
    edit_json(dream_copy / "config.json", lambda c: c.update(mask_token_id=other_id))
    assert load_model(str(dream_copy), device="cpu").mask_id == other_id
    # config.json disagreeing with the tokenizer is refused, naming both
    edit_json(dream_copy / "config.json", lambda c: c.update(mask_token_id=other_id + 1))
    with pytest.raises(ModelLoadError, match=r"tokenizer_config.json.*<\|fim_pad\|>.*config.json says mask_token_id"):
        load_model(str(dream_copy), device="cpu")


def test_chat_template_comes_from_the_tokenizer(dream):
    text = dream.tokenizer.decode(dream.encode_prompt("hi"))
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>user\nhi<|im_end|>\n"
                                                                      "<|im_start|>assistant\n")
    assert "<|im_start|>" not in dream.tokenizer.decode(dream.encode_prompt("hi", chat=False))


@pytest.mark.parametrize("change, words", [
    (lambda c: c.update(num_key_value_heads=3), "num_key_value_heads=3 does not divide num_attention_heads=4"),
    (lambda c: c.update(hidden_size=0), "hidden_size must be a whole number above 0"),
    (lambda c: c.update(rope_scaling={"type": "yarn", "factor": 4.0}), "rope_scaling"),
    (lambda c: c.update(hidden_act="gelu"), "hidden_act='gelu'"),
    (lambda c: c.pop("intermediate_size"), "without intermediate_size"),
    (lambda c: c.update(num_hidden_layers=1), "model.layers.1."),
])
def test_a_broken_dream_config_names_its_key(dream_copy, change, words):
    edit_json(dream_copy / "config.json", change)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(dream_copy), device="cpu")
    assert words in str(info.value) and str(dream_copy) in str(info.value)


def test_a_missing_dream_tensor_is_named_by_its_checkpoint_name(dream_copy):
    from safetensors.torch import load_file, save_file

    index = json.loads((dream_copy / "model.safetensors.index.json").read_text())
    shard = dream_copy / index["weight_map"]["model.layers.0.self_attn.k_proj.bias"]
    tensors = load_file(str(shard))
    del tensors["model.layers.0.self_attn.k_proj.bias"]
    save_file(tensors, str(shard), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="tensor model.layers.0.self_attn.k_proj.bias is missing"):
        load_model(str(dream_copy), device="cpu")


# --- the network ------------------------------------------------------------------------------

@torch.no_grad()
def test_dream_forward_matches_transformers_qwen2_with_bidirectional_attention(dream, dream_dir):
    """An independent oracle: transformers' own Qwen2 modelling (eager attention) on the same
    safetensors, its causal mask replaced by an all-visible 4D mask."""
    from safetensors.torch import load_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    raw = json.loads((dream_dir / "config.json").read_text())
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "rms_norm_eps", "rope_theta", "max_position_embeddings", "tie_word_embeddings",
            "hidden_act")
    qwen = Qwen2ForCausalLM(Qwen2Config(**{k: raw[k] for k in keys}, attn_implementation="eager")).eval()
    state = {}
    for shard in dream_dir.glob("model-*.safetensors"):
        state.update(load_file(str(shard)))
    assert qwen.load_state_dict(state, strict=True)
    torch.manual_seed(0)
    tokens = torch.randint(0, raw["vocab_size"], (1, 23))
    everyone = torch.ones(1, 1, 23, 23, dtype=torch.bool)
    oracle = qwen(tokens, attention_mask=everyone).logits
    changed = tokens.clone()
    changed[0, -1] = (changed[0, -1] + 1) % raw["vocab_size"]
    assert not torch.allclose(qwen(changed, attention_mask=everyone).logits[0, 0], oracle[0, 0]), \
        "the oracle must attend to later positions"
    ours = dream.net(tokens)
    assert torch.allclose(ours, oracle, atol=1e-4, rtol=1e-5), (ours - oracle).abs().max()
    assert torch.allclose(dream.forward(tokens, start=7), shifted(oracle)[:, 7:], atol=1e-4, rtol=1e-5)


class RowNet(torch.nn.Module):
    """A stand-in network whose row r predicts token (r + 5) % vocab with certainty."""

    def __init__(self, vocab: int):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.cfg = SimpleNamespace(vocab_size=vocab, max_sequence_length=512, n_layers=1)

    def forward(self, tokens, cache=None, logits_from=0):
        T, V = tokens.shape[1], self.cfg.vocab_size
        rows = torch.arange(T)
        logits = torch.full((tokens.shape[0], T, V), -20.0)
        logits[:, rows, (rows + 5) % V] = 20.0
        return logits[:, logits_from:]

    def forward_flops(self, *args, **kwargs):
        return 0.0


@pytest.mark.parametrize("sampler, params", [("baseline", {}), ("slowfast", {"variant": "dream"}), ("dream", {})])
def test_shifted_logits_by_hand(dream, sampler, params):
    """Prompt of 4 tokens, 6 generated: row r predicts r + 5, so with the shift generated position
    g (canvas row 4 + g) takes row 3 + g's prediction: 8, 9, ..., 13 (without it 9, ..., 14)."""
    V = 50
    stub = DLLM(name="rows", net=RowNet(V), tokenizer=dream.tokenizer, mask_id=V - 1, eos_ids=frozenset(),
                shift_logits=True, family="dream")
    logits = stub.forward(torch.tensor([[1, 2, 3, 4, 49, 49]]))
    assert logits.argmax(-1)[0].tolist() == [5, 5, 6, 7, 8, 9]  # position 0 reads its own row
    assert stub.forward(torch.tensor([[1, 2, 3, 4, 49, 49]]), start=4).argmax(-1)[0].tolist() == [8, 9]
    s = GenerationSettings(sampler=sampler, gen_length=6, block_length=6, steps=6, params=params)
    assert generate(stub, [1, 2, 3, 4], s).tokens == [8, 9, 10, 11, 12, 13]
    stub.shift_logits = False
    assert generate(stub, [1, 2, 3, 4], s).tokens == [9, 10, 11, 12, 13, 14]


# --- Dream's own decoding ---------------------------------------------------------------------

def test_scoring_statistics_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    conf, tok, score = score_logits(logits, 0.0, None, Scoring())
    assert tok.tolist() == [0] and conf.item() == pytest.approx(0.5) and score.item() == pytest.approx(0.5)
    _, _, margin = score_logits(logits, 0.0, None, Scoring(score="margin"))
    assert margin.item() == pytest.approx(0.2)
    _, _, ent = score_logits(logits, 0.0, None, Scoring(score="neg_entropy"))
    assert ent.item() == pytest.approx(sum(p * math.log(p) for p in (0.5, 0.3, 0.2)), abs=1e-6)
    # top-p 0.6: 0.5 is below it, so the token that crosses it (0.3) stays, 0.2 goes
    conf, _, _ = score_logits(logits, 0.0, None, Scoring(top_p=0.6))
    assert conf.item() == pytest.approx(0.5 / 0.8)
    conf, _, _ = score_logits(logits, 0.0, None, Scoring(top_k=1))
    assert conf.item() == pytest.approx(1.0)
    # temperature 2 flattens before the filters: p ~ sqrt(p)
    conf, _, _ = score_logits(logits, 2.0, torch.Generator().manual_seed(0), Scoring(top_k=1))
    assert conf.item() == pytest.approx(1.0)


def test_dream_schedule_unmasks_on_the_timestep_schedule():
    layout = Layout(gen_length=10, block_length=10, steps=4)
    p = make_policy("dream", {"alg": "maskgit_plus"})
    p.check_layout(layout)
    p.reset(layout, np.random.default_rng(0))
    t = torch.linspace(1, 1e-3, 5)
    mask, counts = np.ones(10, bool), []
    while not p.done(mask):
        conf = np.linspace(0.1, 0.9, 10).astype(np.float32)
        d = p.decide(Observation(mask=mask.copy(), confidence=conf, score=conf))
        i = len(counts)
        expected = int(mask.sum()) if i == 3 else int(torch.tensor(float(mask.sum())) * (1 - t[i + 1] / t[i]))
        assert len(d.decode) == expected and mask[d.decode].all()
        assert set(d.decode) == set(np.flatnonzero(mask)[np.argsort(-conf[mask], kind="stable")][:expected])
        counts.append(len(d.decode))
        mask[d.decode] = False
    assert len(counts) == 4 and not mask.any() and sum(counts) == 10


def test_dream_ranks_by_the_score_the_engine_computed():
    layout = Layout(8, 8, 8)
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2], np.float32)
    score = conf[::-1].copy()  # e.g. negative entropies ranking the other way round
    for alg, first in (("maskgit_plus", 0), ("entropy", 7), ("topk_margin", 7)):
        p = make_policy("dream", {"alg": alg})
        p.reset(layout, np.random.default_rng(0))
        obs = Observation(mask=np.ones(8, bool), confidence=conf,
                          score=conf if alg == "maskgit_plus" else score)
        p.step = 4  # int(8 * (1 - t5 / t4)) = 1 position at this step of the schedule
        d = p.decide(obs)
        assert d.decode.tolist() == [first]
    assert make_policy("dream", {"alg": "entropy"}).scoring() == Scoring(score="neg_entropy")
    assert make_policy("dream", {"alg": "topk_margin", "top_p": 0.9, "top_k": 5}).scoring() == \
        Scoring(score="margin", top_p=0.9, top_k=5)


def test_alg_temp_samples_positions_reproducibly():
    layout = Layout(16, 16, 4)

    def picks(seed):
        p = make_policy("dream", {"alg": "maskgit_plus", "alg_temp": 0.5})
        p.reset(layout, np.random.default_rng(seed))
        conf = np.linspace(0.1, 0.9, 16).astype(np.float32)
        return p.decide(Observation(mask=np.ones(16, bool), confidence=conf, score=conf)).decode.tolist()

    assert picks(1) == picks(1) and len(picks(1)) == 3  # int(16 * (1 - 0.75025 / 1))
    assert any(picks(s) != picks(1) for s in range(2, 12))


@pytest.mark.parametrize("params, message", [
    ({"alg": "magic"}, "alg: 'magic'"), ({"alg_temp": -1}, "alg_temp: -1"), ({"eps": 0}, "eps: 0"),
    ({"top_p": 0}, "top_p: 0"), ({"top_k": 0}, "top_k: 0"),
])
def test_dream_parameters_are_checked(params, message):
    with pytest.raises(ValueError, match=message):
        make_policy("dream", params)


def test_dream_has_no_blocks_and_at_most_one_step_per_position():
    with pytest.raises(ValueError, match="block_length: 16 .*no blocks"):
        GenerationSettings(sampler="dream", gen_length=32, block_length=16, steps=32).policy()
    with pytest.raises(ValueError, match="steps: 64"):
        GenerationSettings(sampler="dream", gen_length=32, block_length=32, steps=64).policy()


def longhand_filter(row, top_p, top_k):
    """top-p then top-k on one row of logits, written out with numpy (Dream's order)."""
    x = row.astype(np.float64).copy()
    lowest = np.finfo(np.float32).min
    if top_p is not None and top_p < 1:
        order = np.argsort(-x, kind="stable")
        p = np.exp(x[order] - x.max())
        cum = np.cumsum(p / p.sum())
        for j in range(1, len(order)):
            if cum[j - 1] > top_p:
                x[order[j]] = lowest
    if top_k is not None:
        kth = np.sort(x)[::-1][min(top_k, len(x)) - 1]
        x[x < kth] = lowest
    return x


@torch.no_grad()
def reference_dream_generate(net, prompt_ids, mask_id, gen_length, steps, alg, eps=1e-3, top_p=None, top_k=None):
    """Dream's greedy generate written out: (final tokens, positions decoded per step)."""
    P = len(prompt_ids)
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[0, :P] = torch.tensor(prompt_ids)
    timesteps = torch.linspace(1, eps, steps + 1)
    orders = []
    for i in range(steps):
        masked = x[0] == mask_id
        logits = shifted(net(x))[0].float().numpy()
        conf = torch.full((x.shape[1],), -math.inf, dtype=torch.float64)
        x0 = torch.full((x.shape[1],), mask_id, dtype=torch.long)
        for pos in masked.nonzero()[:, 0].tolist():
            z = longhand_filter(logits[pos], top_p, top_k)
            p = np.exp(z - z.max())
            p /= p.sum()
            x0[pos] = int(p.argmax())
            if alg == "maskgit_plus":
                conf[pos] = p.max()
            elif alg == "topk_margin":
                top = np.sort(p)[::-1]
                conf[pos] = top[0] - top[1]
            else:
                conf[pos] = float(np.sum(p * np.log(p + 1e-10)))
        t, s = timesteps[i], timesteps[i + 1]
        k = int(masked.sum() * (1 - s / t)) if i < steps - 1 else int(masked.sum())
        picked = conf.topk(k).indices if k > 0 else torch.tensor([], dtype=torch.long)
        x[0, picked] = x0[picked]
        orders.append(sorted((picked - P).tolist()))
    return x[0, P:].tolist(), orders


@pytest.mark.parametrize("alg, top_p, top_k", [("entropy", None, None), ("maskgit_plus", None, None),
                                               ("topk_margin", None, None), ("maskgit_plus", 0.9, 5)])
def test_dream_sampler_matches_a_longhand_dream_generate(dream, alg, top_p, top_k):
    """On the unscaled model, where no two positions tie (torch.topk's order among equal scores
    is unspecified; ours takes the lower position first)."""
    prompt = dream.encode_prompt(PROMPT, chat=False)
    tokens, orders = reference_dream_generate(dream.net, prompt, dream.mask_id, 24, 10, alg, top_p=top_p, top_k=top_k)
    params = {"alg": alg, "top_p": top_p, "top_k": top_k}
    trace = generate(dream, prompt, GenerationSettings(sampler="dream", gen_length=24, block_length=24, steps=10,
                                                        params=params))
    assert [sorted(r.decoded) for r in trace.records] == orders
    assert trace.tokens == tokens and trace.summary["nfe"] == 10


# --- SlowFast's Dream variant -----------------------------------------------------------------

@torch.no_grad()
def reference_slowfast_dream(net, prompt_ids, mask_id, gen_length, discovery_steps=6, cycle_len_threshold=0.1,
                             stabilize_count=2, variance_threshold=1.0, discovery_parallel=0.8, decode_parallel=0.9,
                             min_parallel=2):
    """The published Dream sampler's loop (batch 1, greedy), written out: (tokens, positions
    decoded by each forward, NFE). The history starts each cycle as zeros, as there."""
    P = len(prompt_ids)
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[0, :P] = torch.tensor(prompt_ids)
    orders, nfe, start = [], 0, 0

    def scored(logits, lo, hi):
        probs = torch.softmax(shifted(logits)[0, P:].float(), -1)
        conf, tok = probs.max(-1)
        masked = x[0, P:] == mask_id
        return torch.where(masked[lo:hi], conf[lo:hi], torch.tensor(-math.inf)), tok

    def fill(conf, tok, lo, threshold):
        sure = (conf >= threshold).nonzero()[:, 0]
        pos = sure if sure.numel() >= min_parallel else conf.topk(1).indices
        pos = (lo + pos).tolist()
        x[0, [P + q for q in pos]] = tok[pos]
        orders.append(sorted(pos))

    while (x == mask_id).any():
        history = torch.zeros(stabilize_count)
        determined, end = False, None
        for step in range(discovery_steps):
            if not (x == mask_id).any():
                break
            nfe += 1
            conf, tok = scored(net(x), start, gen_length)
            if not determined:
                hits = (conf >= cycle_len_threshold).nonzero()[:, 0]
                potential = start + (int(hits.max()) + 1 if hits.numel() else 1)
                history[step % stabilize_count] = potential
                variance = history.var(unbiased=True) if stabilize_count >= 2 else torch.tensor(0.0)
                if variance <= variance_threshold:
                    end, determined = potential, True
                else:
                    end = max(1, int(torch.round(history.mean())))
                    determined = step == discovery_steps - 1
            fill(conf, tok, start, discovery_parallel)
        tail = None
        while (x[0, P + start:P + end] == mask_id).any():
            nfe += 1
            if tail is None:
                logits = net(x)
                tail = logits[:, P + end:]
            else:
                logits = torch.cat([net(x[:, :P + end]), tail], dim=1)
            conf, tok = scored(logits, start, end)
            fill(conf, tok, start, decode_parallel)
        start = end
    return x[0, P:].tolist(), orders, nfe


@pytest.mark.parametrize("which", ["tiny", "peaky"])
@pytest.mark.parametrize("gen_length", [24, 48])
def test_slowfast_dream_variant_matches_the_published_loop(dream, peaky_dream, which, gen_length):
    model = dream if which == "tiny" else peaky_dream
    prompt = model.encode_prompt(PROMPT, chat=False)
    tokens, orders, nfe = reference_slowfast_dream(model.net, prompt, model.mask_id, gen_length)
    trace = generate(model, prompt, GenerationSettings(sampler="slowfast", gen_length=gen_length,
                                                        block_length=gen_length, params={"variant": "dream"}))
    assert [sorted(r.decoded) for r in trace.records] == orders
    assert trace.tokens == tokens and trace.summary["nfe"] == nfe
    if which == "peaky":
        assert max(len(r.decoded) for r in trace.records) > 1, "the peaky model should decode in parallel"


def test_slowfast_dream_variant_truncated_forwards_match_the_published_loop(staircase_dream):
    prompt = staircase_dream.encode_prompt(PROMPT)
    tokens, orders, nfe = reference_slowfast_dream(staircase_dream.net, prompt, staircase_dream.mask_id, 32)
    trace = generate(staircase_dream, prompt, GenerationSettings(sampler="slowfast", gen_length=32, block_length=32,
                                                                  params={"variant": "dream"}))
    assert any(r.fed_end < 32 for r in trace.records), "the fast stage should feed a truncated canvas"
    assert [sorted(r.decoded) for r in trace.records] == orders
    assert trace.tokens == tokens and trace.summary["nfe"] == nfe


def started_dream_variant(G=16, **params):
    layout = Layout(G, G, G)
    p = make_policy("slowfast", {"variant": "dream", **params})
    p.check_layout(layout)
    p.reset(layout, np.random.default_rng(0))
    return p


def dream_obs(conf, mask=None):
    conf = np.asarray(conf, np.float32)
    mask = np.ones(conf.size, bool) if mask is None else mask
    return Observation(mask=mask, confidence=conf)


def test_dream_variant_defaults_and_aliases():
    p = make_policy("slowfast", {"variant": "dream"})
    assert (p.exploration_steps, p.horizon_threshold, p.stability_window, p.std_threshold,
            p.high_confidence_threshold, p.slow_confidence_threshold) == (6, 0.1, 2, 1.0, 0.9, 0.8)
    assert make_policy("slowfast", {"variant": "dream", "high_conf_for_parallel_decode_discovery": 0.7}) \
        .slow_confidence_threshold == 0.7
    assert make_policy("slowfast", {}).slow_confidence_threshold is None  # LLaDA: one threshold for both stages
    with pytest.raises(ValueError, match="block_length: 8 .*dream variant"):
        GenerationSettings(sampler="slowfast", gen_length=16, block_length=8, params={"variant": "dream"}).policy()


def test_dream_variant_window_starts_with_zeros_and_uses_the_unbiased_variance():
    # first estimate 1: var([0, 1]) = 0.5 <= 1, so the span freezes at once (the reference's zeros)
    p = started_dream_variant()
    d = p.decide(dream_obs(np.full(16, 0.05)))
    assert d.horizons == [0, 1] and d.horizon_spread == pytest.approx(0.5) and d.info["frozen"]
    # first estimate 6: var([0, 6]) = 18, not frozen, span end round(3.0) = 3
    p = started_dream_variant()
    conf = np.full(16, 0.05, np.float32)
    conf[5] = 0.2
    d = p.decide(dream_obs(conf))
    assert not d.info["frozen"] and d.span == (0, 3) and d.horizon_spread == pytest.approx(18.0)
    # then 7: var([6, 7]) = 0.5 <= 1 (population std 0.5 would pass too; [6, 8] has var 2.0)
    mask = np.ones(16, bool)
    mask[d.decode] = False
    conf[6] = 0.2
    d = p.decide(dream_obs(conf, mask))
    assert d.info["frozen"] and d.span == (0, 7)


def test_dream_variant_rounds_half_to_even_and_decodes_the_slow_stage_at_0_8():
    p = started_dream_variant()
    conf = np.full(16, 0.05, np.float32)
    conf[[3, 4]] = 0.85  # estimate 5: the mean of [0, 5] is 2.5 -> 2 (torch.round: half to even)
    d = p.decide(dream_obs(conf))  # and two at or above 0.8 are both decoded (0.9 would take one)
    assert d.span == (0, 2) and sorted(d.decode) == [3, 4]


def test_dream_variant_slow_stage_ends_when_the_canvas_is_full():
    p = started_dream_variant(G=4)
    d = p.decide(dream_obs(np.full(4, 0.95)))
    assert sorted(d.decode) == [0, 1, 2, 3] and p.done(np.zeros(4, bool))


# --- every sampler, the cache, the CLI --------------------------------------------------------

SAMPLERS = [
    ("baseline", {}), ("slowfast", {}), ("slowfast", {"variant": "dream"}), ("slowfast", {"variant": "paper"}),
    ("threshold", {"threshold": 0.7}), ("dream", {}), ("dream", {"alg": "maskgit_plus", "alg_temp": 0.3}),
    ("dream", {"alg": "topk_margin", "top_p": 0.95, "top_k": 20}), ("dream", {"alg": "origin"}),
]


@pytest.mark.parametrize("sampler, params", SAMPLERS)
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_every_sampler_decodes_the_dream_checkpoint(dream, sampler, params, temperature):
    s = GenerationSettings(sampler=sampler, gen_length=32, block_length=32, steps=16, params=params,
                           temperature=temperature, seed=3)
    trace = generate(dream, PROMPT, s)
    assert sorted(i for r in trace.records for i in r.decoded) == list(range(32))
    assert trace.summary["finished"] and dream.mask_id not in trace.tokens
    again = Trace.from_dict(json.loads(json.dumps(trace.to_dict())))
    assert again.tokens == trace.tokens
    assert generate(dream, PROMPT, s).tokens == trace.tokens  # seeded
    if sampler == "dream":
        assert trace.summary["nfe"] == 16


@pytest.mark.parametrize("sampler, params", [("slowfast", {"variant": "dream"}), ("dream", {}), ("baseline", {})])
def test_cache_refreshing_every_forward_equals_the_uncached_forward(staircase_dream, monkeypatch, sampler, params):
    """Shifted logits read the last prompt row too (start - 1): it goes through the cache."""
    peaky_dream = staircase_dream
    original = peaky_dream.forward
    seen = []

    def checking_forward(tokens, cache=None, start=0):
        got = original(tokens, cache=cache, start=start)
        assert torch.allclose(got, original(tokens)[:, start:], atol=1e-4, rtol=1e-5)
        seen.append(tokens.shape[1])
        return got

    monkeypatch.setattr(peaky_dream, "forward", checking_forward)
    s = GenerationSettings(sampler=sampler, gen_length=32, block_length=32, steps=16, params=params,
                           cache={"kp": 1, "kr": 1, "rho": 0.5})
    trace = generate(peaky_dream, PROMPT, s)
    assert len(seen) == trace.summary["nfe"] and trace.summary["finished"]
    if sampler == "slowfast":
        assert len(set(seen)) > 1, "truncated forwards must be covered"


@torch.no_grad()
def test_v_verify_with_gqa_and_biases_recomputes_against_the_cached_prompt(dream):
    """rho = 1 without a refresh: every response row recomputed against the first forward's
    prompt K/V (written with the block's pieces, the way test_cache.py checks LLaDA)."""
    net, P, G = dream.net, 6, 10
    torch.manual_seed(0)
    first = torch.randint(0, 250, (1, P + G))
    second = first.clone()
    second[0, P:] = torch.randint(0, 250, (G,))
    cache = FeatureCache(CacheSettings(kp=100, kr=100, rho=1.0, refresh_first_layer=False), P, G, 2)
    cache.begin_forward()
    net(first, cache=cache)
    cache.begin_forward()
    got = net(second, cache=cache)
    cos, sin = net.rope(P + G, "cpu")
    x1, x2 = net.transformer["wte"](first), net.transformer["wte"](second)
    for block in net.transformer["blocks"]:
        n1 = block.attn_norm(x1)
        k1, v1 = block.k(n1, cos, sin), block.v(n1)
        a1 = block.attend(block.q(n1, cos, sin), k1, v1)
        f1 = block.ffn(x1 + a1)
        n2 = block.attn_norm(x2[:, P:])
        a2 = block.attend(block.q(n2, cos[P:], sin[P:]), torch.cat([k1[:, :, :P], block.k(n2, cos[P:], sin[P:])], 2),
                          torch.cat([v1[:, :, :P], block.v(n2)], 2))
        h2 = x2[:, P:] + a2
        x2 = torch.cat([x2[:, :P] + a1[:, :P] + f1[:, :P], h2 + block.ffn(h2)], 1)
        x1 = x1 + a1 + f1
    assert torch.allclose(got, net.head(x2), atol=1e-4, rtol=1e-5)


def test_the_dream_cache_preset_runs_and_reuses_features(dream):
    from slowfast.cache import CACHE_PRESETS

    s = GenerationSettings(sampler="slowfast", gen_length=32, block_length=32, params={"variant": "dream"},
                           cache=CACHE_PRESETS["dream-demo"])
    trace = generate(dream, PROMPT, s)
    assert trace.summary["finished"] and trace.summary["cache_bytes"] > 0
    assert any(sum(r.cache["response_reused"]) > 0 for r in trace.records)
    assert trace.settings["cache"] == {"kp": 100, "kr": 7, "rho": 0.25, "refresh_first_layer": True}


def test_cli_decodes_dream_with_its_own_sampler(dream_dir, tmp_path, capsys):
    out = tmp_path / "t.json"
    code = cli_main(["generate", "--model", str(dream_dir), "--prompt", "Hi", "--sampler", "dream", "--alg",
                     "topk_margin", "--top-p", "0.9", "--steps", "8", "--gen-length", "16", "--block-length", "16",
                     "--device", "cpu", "--trace", str(out)])
    assert code == 0, capsys.readouterr().err
    trace = Trace.load(out)
    assert trace.settings["sampler"] == "dream" and trace.settings["params"]["alg"] == "topk_margin"
    assert trace.summary["nfe"] == 8
    code = cli_main(["generate", "--model", str(dream_dir), "--prompt", "Hi", "--variant", "dream", "--cache-preset",
                     "dream-demo", "--gen-length", "16", "--block-length", "16", "--device", "cpu"])
    assert code == 0


# --- what the model picker needs --------------------------------------------------------------

@pytest.mark.parametrize("cfg", [
    ModelConfig(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=48, vocab_size=60,
                embedding_size=64, include_qkv_bias=True),
    ModelConfig(d_model=32, n_heads=4, n_layers=3, mlp_hidden_size=40, vocab_size=50, weight_tying=True),
    ModelConfig(d_model=32, n_heads=2, n_layers=1, mlp_hidden_size=40, vocab_size=50, include_bias=True),
])
def test_parameter_count_is_the_networks(cfg):
    with torch.device("meta"):
        assert parameter_count(cfg) == Transformer(cfg).num_parameters()


def test_known_models_say_size_memory_and_cache():
    dream7, llada8 = KNOWN_MODELS["Dream-org/Dream-v0-Instruct-7B"], KNOWN_MODELS["GSAI-ML/LLaDA-8B-Instruct"]
    assert dream7.family == "dream" and dream7.cache and 7.5e9 < dream7.parameters < 7.7e9  # Qwen2.5-7B: 7.6B
    assert llada8.family == "llada" and 7.9e9 < llada8.parameters < 8.1e9
    assert dream7.parameters == parameter_count(DREAM_7B) and llada8.parameters == parameter_count(LLADA_8B)
    assert dream7.weight_bytes("bfloat16") * 2 == dream7.weight_bytes("float32") == 4 * dream7.parameters
    bert = KNOWN_MODELS["dllm-hub/ModernBERT-base-chat-v0.1"]
    assert bert.family == "masked-lm" and not bert.cache
    check = check_memory("Dream-org/Dream-v0-Instruct-7B", device="cpu")
    assert check.dtype == "float32" and check.needed == memory_needed(dream7.parameters, torch.float32)
    assert check.needed > dream7.weight_bytes(torch.float32) and "GB" in check.message
    if check.available is not None:
        assert check.fits == (check.needed <= check.available)


def test_check_memory_reads_a_local_folder(dream_dir, dream):
    check = check_memory(str(dream_dir), device="cpu")
    assert check.parameters == dream.net.num_parameters() and check.fits in (True, None)
