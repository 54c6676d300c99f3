"""The old home of the command line, kept for ``slowfast/sweep.py``'s command part (``cmd_sweep``
imports ``check_output_path`` from here) until that moves to ``slowfast/commands/``; then this
file goes. The command line is ``slowfast/commands/cli.py``."""
from .commands.cli import build_parser, main  # noqa: F401
from .commands.common import check_output_path  # noqa: F401
