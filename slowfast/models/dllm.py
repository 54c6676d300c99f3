"""The model contract: what a loaded diffusion LM is to the engine, the samplers' runs and the app.

A ``DLLM`` is its network (``forward(tokens, cache, start) -> logits``), its tokenizer (prompt
text or a conversation -> ids, ids -> text and one display string per token) and the facts the
engine needs (mask id, end-of-text ids, context length, vocabulary size, whether Dream-style
logits are shifted, whether dLLM-Cache works in its blocks). ``loading.py`` builds one from a
checkpoint folder; tests build one around any network with the same ``forward``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .transformer import Transformer

PROMPT_BYTES_PER_TOKEN = 16  # a prompt's UTF-8 size is bounded by this x the context before it is tokenized


@dataclass
class DLLM:
    """A loaded diffusion LM: the network, its tokenizer and the facts the engine needs."""

    name: str
    net: Any  # our Transformer, or a MaskedLMNet around a transformers masked LM
    tokenizer: object
    mask_id: int
    eos_ids: frozenset[int]
    shift_logits: bool = False  # Dream-style models read position i's logits at i-1
    folder: Optional[Path] = None
    family: str = "llada"  # which loader built it: loading.py's LLADA (the default), DREAM or MASKED_LM

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    @property
    def supports_cache(self) -> bool:
        """dLLM-Cache lives in our transformer's blocks; other networks have none."""
        return isinstance(self.net, Transformer)

    @property
    def n_layers(self) -> int:
        """Layers with a dLLM-Cache feature store each."""
        return self.net.cfg.n_layers

    @property
    def vocab_size(self) -> int:
        """Valid token ids are 0 .. vocab_size - 1."""
        return self.net.cfg.vocab_size

    def forward_flops(self, batch: int, length: int, cache=None, logits_from: int = 0) -> float:
        """Estimated matmul FLOPs of one forward (what the trace reports per step)."""
        return self.net.forward_flops(batch, length, cache, logits_from=logits_from)

    @property
    def max_length(self) -> int:
        return self.net.cfg.max_sequence_length

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def max_prompt_bytes(self) -> int:
        """The most UTF-8 bytes of prompt text worth tokenizing: ``PROMPT_BYTES_PER_TOKEN`` per
        token of the context (a longer text cannot fit, and tokenizing it only costs time)."""
        return self.max_length * PROMPT_BYTES_PER_TOKEN

    def check_prompt_size(self, prompt: str | Sequence[dict]) -> None:
        """Refuse (ValueError) a prompt, text or conversation (``[{"role", "content"}, ...]``),
        whose UTF-8 size is over ``max_prompt_bytes``, before anything tokenizes it: a cheap
        check for every entry point. The token count against the context is checked after
        tokenizing (``engine.check_prompt_length``)."""
        limit = self.max_prompt_bytes
        texts = [prompt] if isinstance(prompt, str) else [
            str(m.get(key, "")) for m in prompt if isinstance(m, dict) for key in ("role", "content")]
        chars = sum(len(t) for t in texts)
        why = f"({PROMPT_BYTES_PER_TOKEN} per token of the model's context of {self.max_length} tokens)"
        if chars > limit:  # a character is at least one byte: no need to encode it to know
            raise ValueError(f"prompt: {chars} characters, over the size a prompt may have; allowed: at most "
                             f"{limit} bytes of UTF-8 text {why}")
        if chars * 4 > limit:  # at most 4 bytes a character: only a text near the bound is measured
            size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
            if size > limit:
                raise ValueError(f"prompt: {size} bytes of UTF-8 text, over the size a prompt may have; allowed: "
                                 f"at most {limit} bytes {why}")

    @property
    def block_causal(self) -> bool:
        """Whether the network attends block-causally (LLaDA2: bidirectional within a block,
        causal across blocks): a run then gives each forward its ``block_context``."""
        return hasattr(self.net, "block_context")

    def block_context(self, block_length: int, prompt_length: int) -> Any:
        """A run's block-causal context (its block length, prompt length and the KV cache of
        finished blocks; ``slowfast.models.llada2.BlockContext``), None for other networks."""
        return self.net.block_context(block_length, prompt_length) if self.block_causal else None

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, cache=None, start: int = 0, blocks: Any = None) -> torch.Tensor:
        """Logits of positions ``start..T-1`` of ``tokens``; ``cache`` is a
        ``slowfast.cache.FeatureCache`` or None; ``blocks`` a block-causal network's run context."""
        if blocks is not None:
            return self.net(tokens, cache=cache, logits_from=start, blocks=blocks)
        if not self.shift_logits:
            return self.net(tokens, cache=cache, logits_from=start)
        # Dream-style: position i reads the logits computed at row i - 1 (row 0 reads itself)
        logits = self.net(tokens, cache=cache, logits_from=max(start - 1, 0))
        return torch.cat([logits[:, :1], logits[:, :-1]], dim=1) if start == 0 else logits[:, :-1]

    def encode_prompt(self, text: str, chat: bool = True) -> list[int]:
        """Token ids of the prompt; the chat template is applied when the tokenizer has one.
        (It encodes any text: an entry point checks ``check_prompt_size`` first, as ``Run``
        does; lm-eval's harness encodes long contexts and cuts them from the left.)"""
        if chat and self.has_chat_template:
            return self.encode_chat([{"role": "user", "content": text}])
        return list(self.tokenizer(text)["input_ids"])

    def encode_chat(self, messages: Sequence[dict]) -> list[int]:
        """Token ids of a conversation (``[{"role", "content"}, ...]``) ready for the
        assistant's next turn; without a chat template the turns are joined as plain lines."""
        if self.has_chat_template:
            rendered = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                                          tokenize=False)
            return list(self.tokenizer(rendered, add_special_tokens=False)["input_ids"])
        lines = [f"{m['role']}: {m['content']}" for m in messages] + ["assistant:"]
        return list(self.tokenizer("\n".join(lines))["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """One display string per id (the mask shows as the tokenizer's mask token)."""
        return [self.tokenizer.decode([int(i)]) for i in ids]
