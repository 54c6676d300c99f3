"""Tiny random-weight checkpoints in official layouts, for tests and for trying the CLI offline.

    python -m slowfast.models.tiny /tmp/tiny-llada [--seed 0] [--logit-scale 4] [--layout llada|dream|modernbert|llada2]

``llada`` (default) writes config.json, sharded safetensors with model.safetensors.index.json,
and a small character-level tokenizer (tokenizer.json, tokenizer_config.json, special tokens
and a LLaDA-style chat template), exactly as a hub snapshot of LLaDA lays them out.
``dream`` writes Dream-v0's layout: its config.json keys (with auto_map), Qwen2 tensor names
in shards with an index, generation_config.json, a byte-level BPE tokenizer as vocab.json +
merges.txt with Dream's special tokens (Qwen2.5's, then <|beginoftext|> and <|mask|>) and a
ChatML template, and remote-code files that raise if anything ever imports them.
``modernbert`` writes a ModernBertForMaskedLM with save_pretrained and a character tokenizer
with [CLS]/[SEP]/[MASK] and a chat template (the generic masked-LM adapter's test model).
``llada2`` writes LLaDA2.x's layout (``LLaDA2MoeModelLM``: config.json, the official tensor
names in shards, a character tokenizer with <|mask|>, the remote-code files as traps).
"""
from __future__ import annotations

import argparse
import json
import string
from pathlib import Path
from typing import Optional

import torch

from . import dream, llada2
from .loading import save_checkpoint, write_safetensors
from .transformer import ModelConfig, Transformer

SPECIALS = ["<|endoftext|>", "<|startoftext|>", "<|mdm_mask|>", "<|eot_id|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|unk|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def char_level(specials: list[str], unk: str):
    """A character-level ``tokenizers.Tokenizer`` (printable ASCII after ``specials``) and its vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(specials)
    return tok, vocab


def char_tokenizer(chat_template: Optional[str] = CHAT_TEMPLATE):
    """A character-level PreTrainedTokenizerFast with LLaDA's special tokens."""
    from transformers import PreTrainedTokenizerFast

    tok, _ = char_level(SPECIALS, "<|unk|>")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
        mask_token="<|mdm_mask|>", pad_token="<|endoftext|>", unk_token="<|unk|>",
    )
    if chat_template:
        fast.chat_template = chat_template
    return fast


def tiny_config(vocab_size: int, mask_id: int, eos_id: int, **overrides) -> ModelConfig:
    cfg = dict(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=96,
               vocab_size=vocab_size, embedding_size=vocab_size + 4, max_sequence_length=512,
               rope_theta=10000.0, mask_token_id=mask_id, eos_token_id=eos_id, pad_token_id=eos_id)
    cfg.update(overrides)
    return ModelConfig(**cfg)


def write_tiny_checkpoint(folder: str | Path, seed: int = 0, max_shard_bytes: Optional[int] = 40_000,
                          chat_template: Optional[str] = CHAT_TEMPLATE, logit_scale: float = 4.0,
                          **overrides) -> Path:
    """Write a random-weight checkpoint in the official LLaDA layout and return its folder.

    ``logit_scale`` multiplies the output layer: larger values give peakier confidences
    (e.g. 40: many positions above 0.9, so SlowFast's fast stages decode in parallel)."""
    folder = Path(folder)
    tok = char_tokenizer(chat_template)
    vocab = tok.get_vocab()
    cfg = tiny_config(len(vocab), vocab["<|mdm_mask|>"], vocab["<|endoftext|>"], **overrides)
    torch.manual_seed(seed)
    model = Transformer(cfg)
    with torch.no_grad():  # peakier predictions than the default init, so samplers have work
        model.transformer["wte"].weight.normal_(0.0, 1.0)
        for p in model.parameters():
            if p.dim() == 2 and p is not model.transformer["wte"].weight:
                p.mul_(2.0)
        if "ff_out" in model.transformer:
            model.transformer["ff_out"].weight.mul_(logit_scale)
    save_checkpoint(model, folder, max_shard_bytes=max_shard_bytes)
    tok.save_pretrained(str(folder))
    return folder


# --- Dream-v0's layout -----------------------------------------------------------------------

# Qwen2.5's special tokens in their order, then Dream's two (ids 151643.. in the real vocabulary).
DREAM_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<|beginoftext|>", "<|mask|>",
]
# ChatML with a default system turn, as Qwen2.5-style instruct models render a conversation.
DREAM_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
DREAM_MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n")]
REMOTE_CODE_TRAP = "raise RuntimeError('remote code from this folder was run: it must not be')\n"


def byte_level_alphabet() -> list[str]:
    """The 256 characters a byte-level BPE uses for bytes 0..255 (printable Latin-1 bytes stand
    for themselves; the others are shifted past 255, in byte order)."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, shifted = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + shifted))
            shifted += 1
    return out


def write_dream_tokenizer(folder: Path, chat_template: Optional[str] = DREAM_CHAT_TEMPLATE) -> dict[str, int]:
    """vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json as Dream ships
    them (tokenizer_class DreamTokenizer with an auto_map); returns the full vocabulary."""
    vocab = {ch: i for i, ch in enumerate(byte_level_alphabet())}
    for a, b in DREAM_MERGES:
        vocab[a + b] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in DREAM_MERGES))
    added = {}
    for tok in DREAM_SPECIALS:
        vocab[tok] = len(vocab)
        added[str(vocab[tok])] = {"content": tok, "lstrip": False, "normalized": False, "rstrip": False,
                                  "single_word": False, "special": True}
    extra = [t for t in DREAM_SPECIALS if t not in ("<|endoftext|>", "<|beginoftext|>", "<|mask|>")]
    config = {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
        "additional_special_tokens": extra,
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": "<|beginoftext|>", "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>",
        "errors": "replace", "mask_token": "<|mask|>", "model_max_length": 131072, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "DreamTokenizer", "unk_token": None,
    }
    if chat_template:
        config["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    special = {"additional_special_tokens": extra, "bos_token": "<|beginoftext|>", "eos_token": "<|endoftext|>",
               "mask_token": "<|mask|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return vocab


def write_tiny_dream_checkpoint(folder: str | Path, seed: int = 0, max_shard_bytes: Optional[int] = 40_000,
                                chat_template: Optional[str] = DREAM_CHAT_TEMPLATE, logit_scale: float = 4.0,
                                **overrides) -> Path:
    """A random-weight checkpoint in Dream-v0's official layout (see the module docstring)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_dream_tokenizer(folder, chat_template)
    padded = -(-len(vocab) // 16) * 16  # Dream pads its vocabulary too (151667 tokens, 152064 rows)
    eos = vocab["<|endoftext|>"]
    fields = dict(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=96, vocab_size=padded,
                  max_sequence_length=512, rope_theta=1e6, rms_norm_eps=1e-6, include_qkv_bias=True,
                  mask_token_id=vocab["<|mask|>"], eos_token_id=eos, pad_token_id=eos, model_type=dream.FAMILY)
    fields.update(overrides)
    cfg = ModelConfig(**fields)
    torch.manual_seed(seed)
    model = Transformer(cfg)
    with torch.no_grad():  # peaky enough for the samplers; every tensor (biases, norms) non-trivial
        model.transformer["wte"].weight.normal_(0.0, 1.0)
        for name, p in model.named_parameters():
            if p.dim() == 2 and name != "transformer.wte.weight":
                p.mul_(2.0)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.5)
            elif name.endswith("norm.weight") or name.endswith("ln_f.weight"):
                p.uniform_(0.5, 1.5)
        if "ff_out" in model.transformer:
            model.transformer["ff_out"].weight.mul_(logit_scale)
    names = dream.DreamNames()
    write_safetensors({names.theirs(k): v for k, v in model.state_dict().items()}, folder, max_shard_bytes)
    (folder / "config.json").write_text(json.dumps(dream.config_json(cfg.to_dict()), indent=2) + "\n")
    (folder / "generation_config.json").write_text(json.dumps(
        {**dream.GENERATION_CONFIG, "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos}, indent=2) + "\n")
    for code in ("configuration_dream.py", "modeling_dream.py", "generation_utils.py", "tokenization_dream.py"):
        (folder / code).write_text(REMOTE_CODE_TRAP)
    return folder


# --- LLaDA2.x's layout (LLaDA2MoeModelLM) ----------------------------------------------------

LLADA2_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|mask|>", "<role>", "</role>", "<|role_end|>", "<|unk|>"]
# Ling / LLaDA2's turn format: <role>HUMAN</role>text<|role_end|>, then <role>ASSISTANT</role>.
LLADA2_CHAT_TEMPLATE = (
    "{% for m in messages %}<role>{{ 'HUMAN' if m['role'] == 'user' else m['role'] | upper }}</role>"
    "{{ m['content'] }}<|role_end|>{% endfor %}{% if add_generation_prompt %}<role>ASSISTANT</role>{% endif %}"
)
LLADA2_CODE_FILES = ("configuration_llada2_moe.py", "modeling_llada2_moe.py")


def llada2_tokenizer(chat_template: Optional[str] = LLADA2_CHAT_TEMPLATE):
    """A character-level PreTrainedTokenizerFast with LLaDA2's special tokens (<|mask|>, <|endoftext|>)."""
    from transformers import PreTrainedTokenizerFast

    tok, _ = char_level(LLADA2_SPECIALS, "<|unk|>")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   mask_token="<|mask|>", pad_token="<|endoftext|>", unk_token="<|unk|>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


def write_tiny_llada2_checkpoint(folder: str | Path, seed: int = 0, max_shard_bytes: Optional[int] = 200_000,
                                 chat_template: Optional[str] = LLADA2_CHAT_TEMPLATE, logit_scale: float = 4.0,
                                 **overrides) -> Path:
    """A random-weight checkpoint in LLaDA2.x's official layout: config.json with
    ``LLaDA2MoeConfig``'s keys (architectures ``LLaDA2MoeModelLM``, model_type ``llada2_moe``,
    auto_map), sharded safetensors under the official names (``model.word_embeddings``,
    ``model.layers.N.attention.query_key_value``, ``...mlp.gate.expert_bias``, ``...mlp.experts.E.*``,
    ``...mlp.shared_experts.*``, ``lm_head``), a character tokenizer with <|mask|> and
    <|endoftext|>, and the remote-code files as traps that raise if anything imports them.
    Layer 0 is dense, the others mixtures of 8 experts in 4 groups (2 per token, 1 shared)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = llada2_tokenizer(chat_template)
    vocab = tok.get_vocab()
    padded = -(-len(vocab) // 16) * 16  # LLaDA2 pads its vocabulary too (157184 rows)
    fields = dict(vocab_size=padded, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, use_qkv_bias=False, use_bias=False,
                  rms_norm_eps=1e-6, max_position_embeddings=512, rope_theta=600000.0, pad_token_id=vocab["<|endoftext|>"],
                  eos_token_id=vocab["<|endoftext|>"], num_experts=8, num_shared_experts=1, num_experts_per_tok=2,
                  n_group=4, topk_group=2, routed_scaling_factor=2.5, moe_intermediate_size=32,
                  first_k_dense_replace=1, partial_rotary_factor=0.5)
    fields.update(overrides)
    cfg = llada2.Config.from_json(fields)
    torch.manual_seed(seed)
    model = llada2.LLaDA2(cfg)
    with torch.no_grad():  # every tensor random and non-trivial: norms, router bias, experts
        for name, t in model.state_dict(keep_vars=True).items():
            if name.endswith("expert_bias"):
                t.normal_(0.0, 0.3)
            elif name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                t.uniform_(0.5, 1.5)
            elif name == "model.word_embeddings.weight":
                t.normal_(0.0, 1.0)
            elif t.dim() == 2:
                t.normal_(0.0, 1.0 / t.shape[1] ** 0.5).mul_(2.0)
            elif name.endswith(".bias"):
                t.normal_(0.0, 0.5)
        if not cfg.tie_word_embeddings:
            model.lm_head.weight.mul_(logit_scale)
            # a trained model never predicts the mask token; with a zero output row its logit is 0,
            # below the best of the others (the published loop would otherwise write masks forever)
            model.lm_head.weight[vocab["<|mask|>"]] = 0.0
    write_safetensors(dict(model.state_dict()), folder, max_shard_bytes)
    (folder / "config.json").write_text(json.dumps(cfg.to_json(), indent=2) + "\n")
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
         "pad_token_id": vocab["<|endoftext|>"]}, indent=2) + "\n")
    tok.save_pretrained(str(folder))
    for code in LLADA2_CODE_FILES:
        (folder / code).write_text(REMOTE_CODE_TRAP)
    return folder


# --- a transformers masked LM (ModernBERT) ---------------------------------------------------

BERT_SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
BERT_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}[SEP]{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def bert_char_tokenizer(chat_template: Optional[str] = BERT_CHAT_TEMPLATE):
    """A character-level PreTrainedTokenizerFast with BERT's special tokens ([CLS] text [SEP])."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok, vocab = char_level(BERT_SPECIALS, "[UNK]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                   pad_token="[PAD]", mask_token="[MASK]")
    if chat_template:
        fast.chat_template = chat_template
    return fast


def write_tiny_masked_lm(folder: str | Path, seed: int = 0, chat_template: Optional[str] = BERT_CHAT_TEMPLATE,
                         **overrides) -> Path:
    """A random ModernBertForMaskedLM built from a ModernBertConfig and saved with
    save_pretrained (model.safetensors + config.json), with a tokenizer that has a mask token."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    folder = Path(folder)
    tok = bert_char_tokenizer(chat_template)
    ids = tok.get_vocab()
    config = dict(vocab_size=-(-len(ids) // 8) * 8, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=512, global_attn_every_n_layers=2,
                  local_attention=16, pad_token_id=ids["[PAD]"], cls_token_id=ids["[CLS]"],
                  sep_token_id=ids["[SEP]"], bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"])
    config.update(overrides)
    torch.manual_seed(seed)
    model = ModernBertForMaskedLM(ModernBertConfig(**config)).eval()
    with torch.no_grad():  # tied input/output table: larger entries give peakier predictions
        model.get_input_embeddings().weight.normal_(0.0, 1.0)
    return save_quietly(model, tok, folder)


def save_quietly(model, tok, folder: Path, **save_kwargs) -> Path:
    """``model.save_pretrained`` and ``tok.save_pretrained`` into ``folder`` without transformers'
    "Writing model shards" bar (a test's output stays clean)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(folder), **save_kwargs)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tok.save_pretrained(str(folder))
    return folder


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slowfast.models.tiny",
                                     description="Write a tiny random-weight checkpoint in an official layout.")
    parser.add_argument("folder", help="where to write it (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--logit-scale", type=float, default=4.0,
                        help="output-layer scale: larger gives peakier confidences (default 4)")
    parser.add_argument("--layout", choices=("llada", "dream", "modernbert", "llada2"), default="llada",
                        help="whose official layout to write (default llada)")
    args = parser.parse_args(argv)
    if args.layout == "dream":
        print(write_tiny_dream_checkpoint(args.folder, seed=args.seed, logit_scale=args.logit_scale))
    elif args.layout == "llada2":
        print(write_tiny_llada2_checkpoint(args.folder, seed=args.seed, logit_scale=args.logit_scale))
    elif args.layout == "modernbert":
        print(write_tiny_masked_lm(args.folder, seed=args.seed))
    else:
        print(write_tiny_checkpoint(args.folder, seed=args.seed, logit_scale=args.logit_scale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
