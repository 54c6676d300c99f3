"""Train the embedded dLLM: tokenizer + LLaDA-style masked diffusion on our tasks, on a CPU.

The objective is LLaDA's: draw t ~ U(eps, 1) per example, mask each response token with
probability t (the prompt is never masked), and minimise the cross-entropy of the masked
tokens weighted by 1/t, summed and divided by the number of response tokens (LLaDA SFT).
Training inputs look exactly like the engine's canvas, ``encode_prompt(prompt) +
gen_length masks``: answers are padded with EOS to the canvas, stories fill it (cut where
it ends). The canvas length is drawn per batch from a few lengths around the task's
``gen_length``, and some batches are cut short on the right, so the model also works at
other lengths and on SlowFast's truncated fast-stage forwards. There is no attention mask,
so every sequence of a batch has the same length: a batch holds one task, one prompt
length and one canvas length.

Everything is seeded (initialisation, the data of step s, the masks of step s), and a
resume checkpoint is written every few minutes, so an interrupted run continues where it
stopped (``--resume``). Held-out scores come from the engine's baseline sampler at one token
per forward (low-confidence remasking, a single block), as ``eval`` and the app decode.

    python -m slowfast train --steps 6000 --out slowfast/models/embedded

``--out`` names the folder the model is exported to; the shipped model
(``slowfast/models/embedded``) is replaced only when ``--out`` names it.

The parts: ``tokenizer``, ``data`` (batches and the objective), ``evals`` (held-out scores),
``card`` (the exported folder and its README), ``flags``, ``loop`` (the run) and ``command``.
"""
from .card import export, model_card  # noqa: F401  (the names the tests and a reader reach for)
from .command import main  # noqa: F401
from .data import Data, draw_masks, masked_diffusion_loss, story_forced  # noqa: F401
from .evals import evaluate_all, evaluate_task, selection_score  # noqa: F401
from .flags import SHIPPED_DIR, build_parser  # noqa: F401
from .loop import ema_update, lr_at  # noqa: F401
from .tokenizer import build_tokenizer, load_tokenizer  # noqa: F401
