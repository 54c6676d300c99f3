"""SlowFast (and every sampler of ours) as a diffusers scheduler, and diffusers runs as our traces.

diffusers is an optional dependency (``pip install -r requirements-diffusers.txt``); the core
library never imports this module. Its names load lazily (module ``__getattr__``), so that
``import slowfast.integrations.diffusers`` works without diffusers and a missing install is one
clear ImportError naming the extra:

* ``SlowFastScheduler`` (``slowfast/integrations/scheduler.py``): the ``step`` contract of diffusers'
  ``BlockRefinementScheduler`` (``set_timesteps``, ``step(...)`` returning a
  ``BlockRefinementSchedulerOutput``, ``check_block_should_continue``, ``check_eos_finished``), made
  for ``LLaDA2Pipeline``. Its decisions are our policies' (``slowfast/samplers/``): SlowFast's
  by default, or any registered sampler by name.
* ``TraceRecorder`` (``slowfast/integrations/recorder.py``): a ``callback_on_step_end`` that turns a
  diffusers discrete pipeline's run into our ``Trace``, which the explorer replays: a mask-based
  block pipeline (``LLaDA2Pipeline``) or a uniform-noise canvas one (``DiffusionGemmaPipeline``
  with ``EntropyBoundScheduler``, ``slowfast/integrations/canvas.py``).
* ``fit_diffusion_gemma`` (``slowfast/integrations/canvas.py``): transformers' DiffusionGemma made
  callable by diffusers' ``DiffusionGemmaPipeline`` (one argument the two versions name apart).
* ``PipelineModel`` (``slowfast/integrations/recorder.py``): a model our loader reads, called the
  way ``LLaDA2Pipeline`` calls its ``model``.
"""
from __future__ import annotations

from typing import Any

INSTALL = "pip install -r requirements-diffusers.txt"
_WHERE = {"SlowFastScheduler": "scheduler", "TraceRecorder": "recorder", "PipelineModel": "recorder",
          "fit_diffusion_gemma": "canvas"}
__all__ = list(_WHERE)


def require_diffusers() -> Any:
    """The diffusers package, or an ImportError saying how to install the extra."""
    try:
        import diffusers  # optional: only this integration needs it
    except ImportError as exc:
        raise ImportError(f"slowfast.integrations.diffusers needs diffusers (0.42 or later): {INSTALL}") from exc
    return diffusers


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _WHERE[name] == "scheduler":
        require_diffusers()  # the scheduler's classes derive from diffusers' own
        from . import scheduler as module  # lazily: it imports diffusers at its top
    elif _WHERE[name] == "canvas":
        from . import canvas as module  # lazily, like the scheduler (it needs no diffusers itself)
    else:
        from . import recorder as module  # lazily, like the scheduler (it needs no diffusers itself)
    return getattr(module, name)
