"""Loading checkpoints in the official LLaDA layout, and the network's arithmetic."""
import json
import math

import pytest
import torch

from slowfast.models import ModelConfig, ModelLoadError, Transformer, load_model, save_checkpoint
from slowfast.models.tiny import char_tokenizer, write_tiny_checkpoint

TOKENS = torch.tensor([[1, 9, 20, 33, 40, 2, 2, 2, 2, 17]])


def test_official_layout_on_disk(tiny_dir):
    index = json.loads((tiny_dir / "model.safetensors.index.json").read_text())
    names = set(index["weight_map"])
    assert "model.transformer.wte.weight" in names and "model.transformer.ff_out.weight" in names
    assert "model.transformer.ln_f.weight" in names
    for part in ("attn_norm", "ff_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"):
        assert f"model.transformer.blocks.1.{part}.weight" in names
    assert len(set(index["weight_map"].values())) > 1  # sharded
    config = json.loads((tiny_dir / "config.json").read_text())
    assert {"d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "mask_token_id"} <= set(config)


def test_saved_random_weights_load_to_the_same_logits(tmp_path):
    cfg = ModelConfig(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=48, vocab_size=60,
                      embedding_size=64, max_sequence_length=64, mask_token_id=2, eos_token_id=0)
    torch.manual_seed(0)
    original = Transformer(cfg).eval()
    for shards in (None, 10_000):
        folder = tmp_path / f"m{shards}"
        save_checkpoint(original, folder, max_shard_bytes=shards)
        char_tokenizer().save_pretrained(str(folder))
        loaded = load_model(str(folder), device="cpu")
        with torch.no_grad():
            assert torch.equal(loaded.net(TOKENS), original(TOKENS))
        assert loaded.net(TOKENS).shape[-1] == 60  # logits cut to vocab_size, not embedding_size


def test_weight_tying_and_bf16(tmp_path):
    folder = write_tiny_checkpoint(tmp_path / "tied", weight_tying=True)
    assert "model.transformer.ff_out.weight" not in (folder / "model.safetensors.index.json").read_text()
    fp32 = load_model(str(folder), device="cpu")
    bf16 = load_model(str(folder), device="cpu", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16 and fp32.dtype == torch.float32
    a, b = fp32.forward(TOKENS), bf16.forward(TOKENS).float()
    assert (a.softmax(-1) - b.softmax(-1)).abs().max() < 0.1


def naive_forward(net: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """LLaDA's block written out longhand (algorithms.md section 5): an independent check of
    RMSNorm, half-rotation RoPE, GQA, bidirectional attention and SwiGLU."""
    c = net.cfg
    T, hd = tokens.shape[1], c.head_dim
    sd = {k: v.double() for k, v in net.state_dict().items()}

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + c.rms_norm_eps) * w

    def rope(x):  # x: [T, H, hd]
        out = torch.empty_like(x)
        half = hd // 2
        for pos in range(T):
            for i in range(half):
                angle = pos / (c.rope_theta ** (2 * i / hd))
                a, b = x[pos, :, i], x[pos, :, i + half]
                out[pos, :, i] = a * math.cos(angle) - b * math.sin(angle)
                out[pos, :, i + half] = b * math.cos(angle) + a * math.sin(angle)
        return out

    x = sd["transformer.wte.weight"][tokens[0]]
    for layer in range(c.n_layers):
        p = lambda name: sd[f"transformer.blocks.{layer}.{name}.weight"]  # noqa: E731
        n = rms(x, p("attn_norm"))
        q = rope((n @ p("q_proj").T).view(T, c.n_heads, hd))
        k = rope((n @ p("k_proj").T).view(T, c.kv_heads, hd))
        v = (n @ p("v_proj").T).view(T, c.kv_heads, hd)
        heads = []
        for h in range(c.n_heads):
            kv = h // (c.n_heads // c.kv_heads)
            scores = q[:, h] @ k[:, kv].T / math.sqrt(hd)  # no causal mask: bidirectional
            heads.append(scores.softmax(-1) @ v[:, kv])
        h_ = x + torch.cat(heads, dim=-1) @ p("attn_out").T
        m = rms(h_, p("ff_norm"))
        gate, up = m @ p("ff_proj").T, m @ p("up_proj").T
        x = h_ + (torch.nn.functional.silu(gate) * up) @ p("ff_out").T
    x = rms(x, sd["transformer.ln_f.weight"])
    return (x @ sd["transformer.ff_out.weight"].T)[:, : c.vocab_size]


def test_network_matches_a_longhand_llada_block(tiny_model):
    with torch.no_grad():
        ours = tiny_model.net(TOKENS)[0].double()
    assert torch.allclose(ours, naive_forward(tiny_model.net, TOKENS), atol=1e-4)


def test_chat_template_is_applied_unless_turned_off(tiny_model):
    chat = tiny_model.tokenizer.decode(tiny_model.encode_prompt("hi", chat=True))
    plain = tiny_model.tokenizer.decode(tiny_model.encode_prompt("hi", chat=False))
    assert chat.startswith("<|startoftext|><|start_header_id|>user") and chat.endswith("assistant<|end_header_id|>\n\n")
    assert "<|start_header_id|>" not in plain and "hi" in plain
    assert tiny_model.mask_id == tiny_model.tokenizer.convert_tokens_to_ids("<|mdm_mask|>")
    assert tiny_model.tokenizer.convert_tokens_to_ids("<|eot_id|>") in tiny_model.eos_ids


def test_unreachable_hub_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="GSAI-ML/LLaDA-8B-Instruct.*local folder.*embedded"):
        load_model("GSAI-ML/LLaDA-8B-Instruct")


def test_missing_folder_and_missing_files(tmp_path, tiny_dir):
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_model(str(tmp_path / "nowhere"))
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_dir.iterdir():
        if not f.name.startswith("model-00002"):
            (broken / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ModelLoadError, match="lacks weight files: model-00002"):
        load_model(str(broken))


def test_not_a_llada_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 64}))
    with pytest.raises(ModelLoadError, match="not a LLaDA-family config"):
        load_model(str(tmp_path))


def test_unsupported_variant_is_refused(tmp_path, tiny_dir):
    for f in tiny_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["alibi"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="RoPE"):
        load_model(str(tmp_path))


def test_bad_dtype(tiny_dir):
    with pytest.raises(ValueError, match="dtype: 'float8'.*float32, bfloat16, float16"):
        load_model(str(tiny_dir), device="cpu", dtype="float8")


def test_shifted_logits_read_the_previous_row(tiny_model, monkeypatch):
    """Dream-style models: position i's logits come from row i - 1; any start gives the same rows."""
    full = tiny_model.net(TOKENS)
    monkeypatch.setattr(tiny_model, "shift_logits", True)
    shifted = tiny_model.forward(TOKENS)
    assert torch.equal(shifted[:, 1:], full[:, :-1]) and torch.equal(shifted[:, 0], full[:, 0])
    assert torch.equal(tiny_model.forward(TOKENS, start=4), shifted[:, 4:])
