"""The embedded model's tokenizer: byte-level BPE trained on the tasks' texts, every digit its own token."""
from __future__ import annotations

import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ...models.loading import load_tokenizer as load_folder_tokenizer
from ...tasks import TASKS

EOS, MASK, PAD = "<|endoftext|>", "<|mdm_mask|>", "<|pad|>"
SPECIALS = [EOS, MASK, PAD]  # ids 0, 1, 2


def tokenizer_corpus(n_task_examples: int = 20000, seed: int = 0) -> list[str]:
    """Task texts, so task words (" answer", " apples") get their own tokens."""
    rng = random.Random(seed)
    lines: list[str] = []
    for name in TASKS:
        task = TASKS[name]
        for _ in range(n_task_examples):
            ex = task.draw(rng, "train")
            lines.append(ex.prompt + ex.target)
    return lines


def build_tokenizer(vocab_size: int, seed: int = 0):
    """Byte-level BPE with every digit its own token; returns a PreTrainedTokenizerFast.

    Digits are split off before BPE (``Digits(individual_digits=True)``), so numbers are
    read and written digit by digit. No post-processor: encoding adds no BOS/EOS, exactly
    as training feeds the model.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(seed=seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        mask_token=MASK,
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    return fast


def load_tokenizer(folder: Path):
    """A saved tokenizer, read as the loader reads one (quiet about config.json's model_type)."""
    return load_folder_tokenizer(Path(folder))


def check_tokenizer(tok) -> None:
    """Round-trip every task's texts; refuse a tokenizer that adds specials or loses text."""
    rng = random.Random(123)
    for name, task in TASKS.items():
        for _ in range(50):
            ex = task.draw(rng, "heldout")
            for text in (ex.prompt, ex.target):
                ids = tok(text)["input_ids"]
                if tok.decode(ids, skip_special_tokens=True) != text:
                    raise RuntimeError(f"tokenizer does not round-trip {text!r}")
    ids = tok("12+3")["input_ids"]
    if len(ids) != 4:
        raise RuntimeError("digits must be single tokens")

