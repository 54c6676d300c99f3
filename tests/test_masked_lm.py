"""The generic masked-LM adapter: any checkpoint transformers' AutoModelForMaskedLM loads
natively runs under every sampler with its tokenizer's mask token and chat template; the
cache is refused by name. Tested on a tiny random ModernBERT built from a ModernBertConfig
and saved with save_pretrained (no download)."""
import json
import shutil

import pytest
import torch

from slowfast.commands.cli import main as cli_main
from slowfast.engine import GenerationSettings, Run, generate
from slowfast.models import ModelLoadError, load_model
from slowfast.models.loading import model_info
from slowfast.models.masked_lm import MaskedLMNet
from slowfast.models.tiny import write_tiny_masked_lm
from slowfast.trace import Trace

PROMPT = "What is 2+2?"


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return write_tiny_masked_lm(tmp_path_factory.mktemp("tiny-modernbert"))


@pytest.fixture(scope="module")
def bert(bert_dir):
    return load_model(str(bert_dir), device="cpu")


@pytest.fixture
def bert_copy(bert_dir, tmp_path):
    return shutil.copytree(bert_dir, tmp_path / "bert")


def test_a_native_masked_lm_loads_through_the_adapter(bert, bert_dir):
    config = json.loads((bert_dir / "config.json").read_text())
    assert config["architectures"] == ["ModernBertForMaskedLM"] and "auto_map" not in config
    assert (bert_dir / "model.safetensors").is_file()
    assert bert.family == "masked-lm" and isinstance(bert.net, MaskedLMNet) and not bert.shift_logits
    assert bert.mask_id == bert.tokenizer.mask_token_id == bert.tokenizer.convert_tokens_to_ids("[MASK]")
    assert bert.tokenizer.sep_token_id in bert.eos_ids and bert.mask_id not in bert.eos_ids
    assert not bert.supports_cache and bert.max_length == config["max_position_embeddings"]


@torch.no_grad()
def test_the_adapter_returns_the_models_own_logits(bert, bert_dir):
    from transformers import AutoModelForMaskedLM

    hf = AutoModelForMaskedLM.from_pretrained(str(bert_dir), dtype=torch.float32).eval()
    tokens = torch.tensor([bert.encode_prompt(PROMPT, chat=False) + [bert.mask_id] * 20])
    expected = hf(input_ids=tokens).logits
    assert torch.allclose(bert.forward(tokens), expected, atol=1e-5)
    assert torch.allclose(bert.forward(tokens, start=5), expected[:, 5:], atol=1e-5)


def test_chat_template_comes_from_its_tokenizer(bert):
    assert bert.tokenizer.decode(bert.encode_prompt("hi")) == "user: hi[SEP]assistant: "
    plain = bert.tokenizer.decode(bert.encode_prompt("hi", chat=False))
    assert plain == "[CLS]hi[SEP]"


@pytest.mark.parametrize("sampler, params, block", [
    ("baseline", {}, 16), ("slowfast", {}, 16), ("slowfast", {"variant": "dream"}, 32),
    ("threshold", {"threshold": 0.5}, 16), ("dream", {}, 32), ("dream", {"alg": "topk_margin", "top_k": 10}, 32),
])
def test_every_sampler_runs_on_its_logits(bert, sampler, params, block):
    s = GenerationSettings(sampler=sampler, gen_length=32, block_length=block, steps=16, params=params)
    trace = generate(bert, PROMPT, s)
    assert sorted(i for r in trace.records for i in r.decoded) == list(range(32))
    assert trace.summary["finished"] and bert.mask_id not in trace.tokens
    assert trace.summary["cache_bytes"] is None and all(r.cache is None for r in trace.records)
    assert trace.summary["flops"] > 0
    Trace.from_dict(json.loads(json.dumps(trace.to_dict())))


def test_the_cache_is_refused_by_name_before_the_run(bert):
    s = GenerationSettings(sampler="slowfast", gen_length=16, block_length=16, cache={})
    with pytest.raises(ValueError, match=r"^cache: dLLM-Cache is not available for this model"):
        Run(bert, PROMPT, s)


def test_cli_says_the_cache_is_not_available(bert_dir, capsys):
    code = cli_main(["generate", "--model", str(bert_dir), "--prompt", "Hi", "--cache", "--gen-length", "16",
                     "--block-length", "16", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cache: dLLM-Cache is not available") and "\n" not in err.strip()
    assert cli_main(["generate", "--model", str(bert_dir), "--prompt", "Hi", "--gen-length", "16",
                     "--block-length", "16", "--device", "cpu"]) == 0


def test_a_tokenizer_without_a_mask_token_is_refused(bert_copy):
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = bert_copy / name
        if path.is_file():
            data = json.loads(path.read_text())
            data.pop("mask_token", None)
            path.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="tokenizer_config.json: the tokenizer has no mask token"):
        load_model(str(bert_copy), device="cpu")


def test_a_masked_lm_that_needs_its_own_code_is_refused_unless_trusted(bert_copy):
    path = bert_copy / "config.json"
    data = json.loads(path.read_text())
    data.update(model_type="my-mdlm", auto_map={"AutoModelForMaskedLM": "modeling_mdlm.MDLM"})
    path.write_text(json.dumps(data))
    (bert_copy / "modeling_mdlm.py").write_text("raise RuntimeError('remote code was run')\n")
    with pytest.raises(ModelLoadError, match="config.json: the folder wants to run its own Python code.*"
                                             "--trust-remote-code"):
        load_model(str(bert_copy), device="cpu")


def test_model_info_reads_the_folder(bert_dir, bert):
    info = model_info(str(bert_dir))
    assert info.family == "masked-lm" and not info.cache and info.chat
    assert info.parameters == bert.net.num_parameters()
