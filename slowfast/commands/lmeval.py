"""``python -m slowfast lm-eval`` (or ``python -m slowfast.harness``): lm_eval's own command line
(``run``, ``ls``, ``validate``) with our model ``slowfast`` (``slowfast/harness.py``) registered."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from ..cache import CACHE_PRESETS
from ..models.loading import ModelLoadError
from ..samplers import SAMPLERS
from .common import INTERRUPTED


def help_preface(named_args: Sequence[str]) -> str:
    """What ``--help`` prints before lm_eval's own help: our model and its model_args."""
    return (
        "python -m slowfast lm-eval: lm_eval's command line with the model 'slowfast' registered (README.md, "
        "\"Accuracy on benchmarks\", and slowfast/harness.py have the details).\n\n"
        "  python -m slowfast lm-eval --model slowfast --model_args pretrained=embedded,sampler=slowfast,"
        "gen_length=96 --tasks TASK\n\n"
        f"model_args (key=value, comma separated): {', '.join(named_args)}, and any parameter of the chosen "
        f"sampler ({', '.join(SAMPLERS)}) or of dLLM-Cache by our name or the reference code's. pretrained: "
        "'embedded', a local folder or a hub id (default embedded); cache: off, on or a preset "
        f"({', '.join(sorted(CACHE_PRESETS))}).\n\n"
        "lm_eval's own help follows.\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """lm_eval's command line with the ``slowfast`` model registered. Returns the exit status: 2
    with one line on stderr when lm_eval is missing, for bad model_args (or another ValueError), a
    model that does not load, or bad lm_eval flags."""
    try:  # here: lm_eval is optional; the rest of the command line works without it
        from lm_eval.__main__ import cli_evaluate

        from ..harness import NAMED_ARGS  # importing it registers the model
    except ImportError as exc:
        print(f"error: lm-eval needs lm_eval ({exc}); allowed: pip install lm_eval, then run this again",
              file=sys.stderr)
        return 2
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    if "-h" in sys.argv[1:] or "--help" in sys.argv[1:]:
        print(help_preface(NAMED_ARGS))
    try:
        cli_evaluate()
    except (ValueError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: lm_eval writes its results (--output_path) only when its run ends", file=sys.stderr)
        return INTERRUPTED
    except SystemExit as exc:  # argparse: --help (0) or a bad flag (2, its message already printed)
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    return 0
