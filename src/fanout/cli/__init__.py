"""The `fanout` command line: a front end on `fanout.launch` and the applications.

- `app`: the typer app and `main` (the console script);
- `common`: exit codes, the one error printer (`exits`), the shared option definitions;
- `batch`, `canvas`, `runs`, `agents`: the commands;
- `follow`, `interrupts`, `progress`: a run in the terminal (its id, Ctrl-C, live display).
"""

from fanout.cli.app import app, main

__all__ = ["app", "main"]
