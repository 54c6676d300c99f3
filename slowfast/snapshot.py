"""``python -m slowfast.snapshot``: canonical traces of many configurations, to check that a refactor
changed nothing. The command lives in ``slowfast/commands/snapshot.py`` (see its docstring)."""

if __name__ == "__main__":  # the door kept for ``python -m slowfast.snapshot``; the library never imports this
    import sys

    from slowfast.commands.snapshot import main

    sys.exit(main())
