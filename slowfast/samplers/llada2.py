"""LLaDA2.x's decoding (the published ``generate`` of LLaDA2.1), as a policy: threshold decoding
with token editing, block by block.

Each forward works on one block (the blocks before it are finished and, on a block-causal
model, a KV cache; later blocks are not fed). From its predictions:

* mask to token (M2T): every masked position of the block whose confidence is above
  ``m2t_threshold`` (strictly) is unmasked, provided there are at least ``min_transfer`` of
  them; otherwise the ``min_transfer`` most confident masked positions (all, if fewer remain);
* token to token (T2T): every decoded position of the block whose prediction now differs from
  its token, with a confidence above ``edit_threshold`` (strictly), takes the new prediction
  (``edit_threshold`` 1 turns editing off: LLaDA2.0's decoding);
* the block is finished after a forward that found it full and edited nothing, or when it
  would need more than ``max_post_steps`` forwards after it filled up (0: finished as soon as
  it is full, as LLaDA2.0's generate). Then the next block starts; the run ends after the last.

Differences from the published loop: a block here starts at the first generated token (the
published code counts blocks from position 0, so the prompt's last block may share the first
generated positions; the same when the prompt's length is a multiple of the block length);
``eos_early_stop`` is not applied (every block is decoded; the text is cut at the first end
token, and since a block never sees later ones the text is the same); at temperature > 0 the
engine's sampling rule (Gumbel, LLaDA's) replaces the published multinomial draw with
top-k/top-p; ties among equal confidences go to the lowest position.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..params import Param, dataclass_of_params
from .base import Decision, Layout, Observation, Policy, Thresholds, top_positions

UNMASK, EDIT = "m2t", "t2t"  # stages: a forward on a block with masks / on a full block (edits only)


@dataclass_of_params
class LLaDA2Policy(Policy):
    name = "llada2"
    TITLE = "LLaDA2 (threshold + editing)"
    STAGES = (UNMASK, EDIT)
    EDITS = True
    PARAMS = (
        Param("m2t_threshold", "llada2", 0.7, 0, 1, "mask to token: unmask every masked position of the block "
              "whose confidence is above it (the published generate's threshold)", minimum=0, maximum=1,
              step=0.01, label="Unmask threshold (M2T)"),
        Param("edit_threshold", "llada2", 0.5, 0, 1, "token to token: a decoded token of the block takes the "
              "model's other prediction when its confidence is above it (1 = no editing, LLaDA2.0)",
              reference="editing_threshold", minimum=0, maximum=1, step=0.01, label="Editing threshold (T2T)"),
        Param("max_post_steps", "llada2", 16, 0, 32, "forwards a full block may still take to edit itself",
              reference="max_post_steps", minimum=0, maximum=4096, step=1, label="Post steps per block"),
        Param("min_transfer", "llada2", 1, 1, 8, "unmask at least this many positions per forward (the most "
              "confident) when fewer are above the threshold", reference="num_to_transfer", minimum=1,
              step=1, label="Minimum unmasked per forward"),
    )

    def thresholds(self) -> Thresholds:
        return Thresholds(threshold=self.m2t_threshold)

    def reset(self, layout: Layout, rng: np.random.Generator) -> None:
        self.layout = layout
        self.block = 0
        self.post = 0  # forwards spent on the current block since it filled up
        self.finished = False

    def done(self, mask: np.ndarray) -> bool:
        """Over once the last block is finished (a full block may still take post steps)."""
        return self.finished

    def current_block(self) -> Optional[int]:
        return None if self.finished else self.block

    def decide(self, obs: Observation) -> Decision:
        block = self.block
        start, end = self.layout.block_bounds(block)
        in_block = np.zeros_like(obs.mask)
        in_block[start:end] = True
        masked = obs.mask & in_block
        active = int(masked.sum())
        decode = np.zeros(0, dtype=np.int64)
        if active:
            above = np.flatnonzero(masked & (obs.confidence > self.m2t_threshold))
            decode = above if above.size >= self.min_transfer else top_positions(obs.confidence, masked,
                                                                                   self.min_transfer)
        changed = obs.changed if obs.changed is not None else np.zeros_like(obs.mask)
        edit = np.flatnonzero(in_block & ~obs.mask & changed & (obs.confidence > self.edit_threshold))
        stage, info = (UNMASK, {"edits": int(edit.size)}) if active else (
            EDIT, {"edits": int(edit.size), "post_step": self.post})
        settled = not active and edit.size == 0
        if not settled and active == decode.size:  # full after this forward: the next one is a post step
            settled = self.post + 1 > self.max_post_steps
            self.post += 0 if settled else 1
        if settled:
            self.block, self.post = block + 1, 0
            self.finished = self.block >= self.layout.num_blocks
        next_end = self.layout.gen_length if self.finished else self.layout.block_bounds(self.block)[1]
        return Decision(decode=decode, stage=stage, block=block, span=(start, end), next_extent=next_end,
                        info=info, edit=edit)
