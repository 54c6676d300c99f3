"""``python -m slowfast bench gpu``: per-forward times of a LLaDA-8B-shaped model on one GPU,
the autoregressive anchor, and a projection from them.

All in one process, within a hard time budget (``--max-minutes``, default 8; a part that would
not fit is skipped with a note):

1. Our ``Transformer`` built from LLaDA-8B-Instruct's official ``config.json`` through the
   loader's own ``llada_config`` (random weights, created on the device in the run's dtype, no
   CPU copy, no download). For each generation length G after a P-token prompt: ms of a full
   forward (P + G tokens, logits for the G generated rows as the engine asks), of SlowFast's
   truncated fast-stage forward (P + span-end tokens), and of dLLM-Cache forwards (K_p 100,
   K_r 5, rho 0.25) run in schedule order, each timed forward classified by the case the
   schedule gives it (the steady case is V-verify: neither refresh). Model FLOPs utilisation
   of the full forward from ``Transformer.forward_flops`` against the GPU's dense bf16 peak.
   Further extents are timed so that forwards of other lengths can be interpolated.
2. What is cheap to try for speed, each measured against eager on the same shapes: the
   uncached forward replayed as a CUDA graph, and (``--compile``) ``torch.compile``.
3. The anchor: transformers' ``LlamaForCausalLM`` with Llama-3-8B's shape (random weights),
   ``generate`` with its KV cache, greedy, exactly N new tokens after the same prompt length:
   tokens/s (``--compile``: also its static cache, which transformers compiles).
4. A projection, labelled as one: for an NFE/tokens-fed profile (the default stated in
   ``default_profile``, or ``--profile`` with a trace file or a summary), projected tokens/s
   of the baseline, SlowFast and SlowFast + cache = gen_length / (sum over the profile's
   forwards of the measured ms of that forward's kind and length).

Timing: on a GPU, CUDA events around each forward and one synchronisation per batch of
forwards (none between them); on a CPU, ``time.perf_counter``. Warm-up forwards first, then
the median of ``--repeats``. ``--small`` is a shrunken shape for CPUs and the tests.

Split along its parts: ``shapes`` (the published configs, the peak table, the random-weight
models), ``timing`` (small helpers, the budget and the clock), ``measure`` (our transformer's
forwards), ``projection``, ``anchor``, ``run`` (the whole run), ``report`` (Markdown) and
``command`` (flags and files).
"""
from .anchor import bench_anchor  # noqa: F401  (the names the tests and a reader reach for)
from .command import add_arguments, main  # noqa: F401
from .measure import LengthBench  # noqa: F401
from .projection import default_profile, load_profile, project, projections  # noqa: F401
from .run import run_benchmark  # noqa: F401
from .shapes import (PROJECTION_LABEL, llada_config, llama_config,  # noqa: F401
                     random_llama, random_transformer)
from .timing import cache_case, interpolate, peak_flops  # noqa: F401
from ...cache import CacheSettings  # noqa: F401
