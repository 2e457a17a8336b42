"""The `fanout` command: the typer app, its commands, `main`. Thin: each command parses
its arguments, calls the library and prints."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from fanout.cli import agents, canvas, runs
from fanout.cli.batch import batch
from fanout.cli.bench import bench
from fanout.cli.common import EXIT_INTERRUPTED, err

app = typer.Typer(
    name="fanout",
    help="Run many LLM agent calls at once, fast and safely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"fanout {version('fanout')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Run many LLM agent calls at once, fast and safely."""


app.command()(batch)
app.command()(runs.resume)
app.command()(runs.runs)
app.command()(runs.status)
app.command()(runs.report)
app.command()(runs.cancel)
app.command()(runs.results)
app.command()(bench)
app.add_typer(runs.cache_app, name="cache")
app.add_typer(canvas.app, name="canvas")
app.add_typer(agents.app, name="agents")


@app.command(
    "sim-server",
    # its own flags (and -h/--help) are the simulator's: everything is passed on to it
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def sim_server(ctx: typer.Context) -> None:
    """Serve the simulator over HTTP on loopback (OpenAI and Anthropic wire formats).

    Flags: --host, --port (8089), --rpm, --tpm, --faults, --latency, --seed, --stats-file.
    """
    from fanout.sim_server import main as sim_main

    raise typer.Exit(sim_main(list(ctx.args)))


def main() -> None:
    # `--retry-failed` alone means every failed task: typer has no option with an optional
    # value, so the bare flag is spelled out here
    argv = ["--retry-failed=all" if a == "--retry-failed" else a for a in sys.argv[1:]]
    try:
        app(argv)
    except KeyboardInterrupt:
        err("interrupted")
        sys.exit(EXIT_INTERRUPTED)
