"""A tiny random-weight LLaDA-layout checkpoint, for tests and for trying the CLI offline.

    python -m slowfast.models.tiny /tmp/tiny-llada [--seed 0] [--logit-scale 4]

writes config.json, sharded safetensors with model.safetensors.index.json, and a small
character-level tokenizer (tokenizer.json, tokenizer_config.json, special tokens and a
LLaDA-style chat template), exactly as a hub snapshot of LLaDA lays them out.
"""
from __future__ import annotations

import argparse
import string
from pathlib import Path
from typing import Optional

import torch

from .loading import save_checkpoint
from .transformer import ModelConfig, Transformer

SPECIALS = ["<|endoftext|>", "<|startoftext|>", "<|mdm_mask|>", "<|eot_id|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|unk|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def char_tokenizer(chat_template: Optional[str] = CHAT_TEMPLATE):
    """A character-level PreTrainedTokenizerFast with LLaDA's special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
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


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slowfast.models.tiny",
                                     description="Write a tiny random-weight checkpoint in LLaDA's official layout.")
    parser.add_argument("folder", help="where to write it (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--logit-scale", type=float, default=4.0,
                        help="output-layer scale: larger gives peakier confidences (default 4)")
    args = parser.parse_args(argv)
    print(write_tiny_checkpoint(args.folder, seed=args.seed, logit_scale=args.logit_scale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
