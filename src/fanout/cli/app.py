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
from fanout.cli.serve import serve

app = typer.Typer(
    name="fanout",
    help="Run many LLM agent calls at once, fast and safely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: rewrapped to the terminal (up to 120 columns), no boxes, no "<bool>"
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
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


# the command list shows one short line each: click cuts a longer one with "..."
app.command(short_help="Run a JSONL file of requests: one result line per line.")(batch)
app.command(short_help="Go on with a run after a crash, kill -9 or Ctrl-C.")(runs.resume)
app.command(short_help="The latest runs: status, done/total, failed, wall time.")(runs.runs)
app.command(short_help="Where a run is: counts, retries, errors, tokens, ETA.")(runs.status)
app.command(short_help="A run's metrics, where its time went, its timeline.")(runs.report)
app.command(short_help="Cancel a run, in whichever process runs it.")(runs.cancel)
app.command(short_help="Export a run's results now, complete or partial.")(runs.results)
app.command(short_help="Serial against parallel on the simulator, with pictures.")(bench)
app.command(short_help="Serve runs over HTTP: API, live events, the dashboard.")(serve)
app.add_typer(runs.cache_app, name="cache", short_help="The result cache: stats, clear.")
app.add_typer(canvas.app, name="canvas", short_help="Explain a canvas's marked nodes at once.")
app.add_typer(agents.app, name="agents", short_help="The agent blueprints: list, show.")


@app.command(
    "sim-server",
    short_help="Serve the simulator over HTTP on loopback.",
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
