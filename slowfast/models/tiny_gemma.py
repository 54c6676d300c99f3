"""A tiny random-weight DiffusionGemma in the official layout, for tests and for trying it offline.

    python -m slowfast.models.tiny_gemma /tmp/tiny-diffusiongemma [--seed 0] [--logit-scale 8]

The folder holds what ``google/diffusiongemma-26B-A4B-it`` holds for the text path:
config.json (``DiffusionGemmaConfig``: architectures ``DiffusionGemmaForBlockDiffusion``,
model_type ``diffusion_gemma``, a ``text_config`` with MoE layers, sliding and full attention,
a small ``gemma4_vision`` ``vision_config``, ``canvas_length``), generation_config.json with the
sampler's settings (transformers' defaults for them: entropy bound 0.1, temperature 0.8 -> 0.4
over 48 steps, stop after 1 stable step below a mean entropy of 0.005), the weights as
safetensors written by transformers' ``save_pretrained`` (sharded, with the index), and a
character-level tokenizer with Gemma's special tokens and turn format (tokenizer.json,
tokenizer_config.json, chat template). Differences from the real files: the tokenizer is not
Gemma's SentencePiece vocabulary, and everything is tiny.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import torch

from .tiny import char_level, save_quietly

GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
                  "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
GENERATION_DEFAULTS = dict(max_denoising_steps=48, t_min=0.4, t_max=0.8, stability_threshold=1,
                           confidence_threshold=0.005, entropy_bound=0.1)


def gemma_char_tokenizer(chat_template: Optional[str] = GEMMA_CHAT_TEMPLATE):
    """A character-level PreTrainedTokenizerFast with Gemma's special tokens (pad 0, eos 1, bos 2)."""
    from transformers import PreTrainedTokenizerFast

    tok, _ = char_level(GEMMA_SPECIALS, "<unk>")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", mask_token="<mask>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


def write_tiny_diffusion_gemma(folder: str | Path, seed: int = 0, canvas_length: int = 16, logit_scale: float = 8.0,
                               max_shard_size: str = "150KB", chat_template: Optional[str] = GEMMA_CHAT_TEMPLATE,
                               **generation) -> Path:
    """Write a random-weight DiffusionGemma to ``folder`` and return it. ``logit_scale``
    multiplies the tied embedding (and so the logits, before Gemma's final soft-capping at 30):
    larger values give peakier predictions, so the entropy bound accepts several tokens a step
    and the stopping rule can trigger. ``generation`` overrides generation_config.json's values."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        DiffusionGemmaGenerationConfig, EntropyBoundSamplerConfig)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = gemma_char_tokenizer(chat_template)
    vocab = tok.get_vocab()
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, head_dim=16, global_head_dim=16,
                max_position_embeddings=1024, sliding_window=32, layer_types=["sliding_attention", "full_attention"],
                num_experts=4, top_k_experts=2, moe_intermediate_size=16, pad_token_id=vocab["<pad>"],
                eos_token_id=vocab["<eos>"], bos_token_id=vocab["<bos>"])
    vision = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=1, num_key_value_heads=1, head_dim=16, patch_size=4, position_embedding_size=16)
    cfg = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=canvas_length,
                               boi_token_id=vocab["<start_of_image>"], eoi_token_id=vocab["<end_of_image>"],
                               image_token_id=vocab["<image_soft_token>"])
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(cfg).eval()
    with torch.no_grad():
        for name, t in model.named_parameters():
            if name.endswith("embed_tokens.weight"):
                t.normal_(0.0, 1.0).mul_(logit_scale / (cfg.text_config.hidden_size ** 0.5))
    settings = {**GENERATION_DEFAULTS, **generation}
    model.generation_config = DiffusionGemmaGenerationConfig(
        max_denoising_steps=settings["max_denoising_steps"], t_min=settings["t_min"], t_max=settings["t_max"],
        stability_threshold=settings["stability_threshold"], confidence_threshold=settings["confidence_threshold"],
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=settings["entropy_bound"]),
        bos_token_id=vocab["<bos>"], pad_token_id=vocab["<pad>"], eos_token_id=[vocab["<eos>"], vocab["<end_of_turn>"]])
    return save_quietly(model, tok, folder, max_shard_size=max_shard_size)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--canvas-length", type=int, default=16)
    ap.add_argument("--logit-scale", type=float, default=8.0)
    args = ap.parse_args(argv)
    print(write_tiny_diffusion_gemma(args.folder, seed=args.seed, canvas_length=args.canvas_length,
                                     logit_scale=args.logit_scale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
