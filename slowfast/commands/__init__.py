"""The command wing: ``python -m slowfast generate|bench|sweep|train|eval|lm-eval`` and
``python -m slowfast.snapshot``, each a small module over one shared helper (``common``:
flag checks, output files, one-line errors, the command line a report prints).

The library (everything in ``slowfast/`` outside this package) never imports it; a command
imports the library, ``visuals`` where it draws, and ``common``.
"""
