"""The old home of the benchmarks' helpers, kept for ``slowfast/sweep.py``'s command part
(``cmd_sweep`` imports these from here) until that moves to ``slowfast/commands/``; then this
file goes. The benchmarks are ``slowfast/commands/bench/``."""
from .commands.common import at_least, machine, machine_line, progress_bar  # noqa: F401
