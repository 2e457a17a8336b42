"""The `fanout` command. Thin: parse arguments, call the library, print.

Exit codes: 0 every task done; 1 some task failed (or the run was cancelled); 2 bad input
or configuration (nothing was run and nothing written); 130 interrupted (the output file is
still written, unfinished lines marked cancelled; a second Ctrl-C aborts without it).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from fanout.errors import ConfigError, FanoutError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
INTERRUPTED = "interrupted by the user (Ctrl-C)"

app = typer.Typer(
    name="fanout",
    help="Run many LLM agent calls at once, fast and safely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _err(message: str) -> None:
    typer.echo(f"fanout: {message}", err=True)


@app.callback()
def _root() -> None:
    """Run many LLM agent calls at once, fast and safely."""


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="fanout.yaml to use (default: ./fanout.yaml if present)."),
]


@app.command()
def batch(
    input: Annotated[Path, typer.Argument(help="JSONL file: one request per line.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write results.")],
    config: ConfigOpt = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Calls in flight at once (default 16).", min=1)
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(help="Provider: a name from fanout.yaml, or sim, openai, anthropic, command."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model for lines that name none.")] = None,
    base_url: Annotated[
        str | None,
        typer.Option(help="Base URL of an OpenAI-compatible or Anthropic server."),
    ] = None,
    command: Annotated[
        str | None, typer.Option(help='Command for --provider command, e.g. "claude -p".')
    ] = None,
    rpm: Annotated[float | None, typer.Option(help="Requests per minute budget.")] = None,
    tpm: Annotated[float | None, typer.Option(help="Tokens per minute budget.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per attempt.")] = None,
    attempts: Annotated[
        int | None, typer.Option(help="Attempts per task (1 = no retry).", min=1)
    ] = None,
    deadline: Annotated[
        float | None, typer.Option(help="Seconds for the whole run; the rest is cancelled.")
    ] = None,
    order: Annotated[str, typer.Option(help="Output order: input or completion.")] = "input",
    strict: Annotated[bool, typer.Option(help="Refuse to start if any line is bad.")] = False,
    sim_latency: Annotated[
        str | None,
        typer.Option(help="Simulator latency, e.g. 50ms or base=50ms,per_token=1ms,jitter=0.2."),
    ] = None,
    sim_faults: Annotated[
        str | None, typer.Option(help="Simulator faults, e.g. 429=0.05,500=0.02,timeout=0.01.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the simulator and retry jitter.")] = 0,
    progress: Annotated[
        bool, typer.Option(help="Live progress on stderr (only on a terminal).")
    ] = True,
    json_summary: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
) -> None:
    """Run every line of a JSONL file; write one result line per input line."""
    from fanout.batch import BatchSink, check_output_path, read_batch
    from fanout.setup import EngineChoice, engine_setup

    try:
        if order not in ("input", "completion"):
            raise ConfigError(f"--order {order!r}: use 'input' or 'completion'")
        setup = engine_setup(
            EngineChoice(
                config=config,
                provider=provider,
                model=model,
                base_url=base_url,
                command=command,
                rpm=rpm,
                tpm=tpm,
                concurrency=concurrency,
                timeout=timeout,
                attempts=attempts,
                sim_latency=sim_latency,
                sim_faults=sim_faults,
                seed=seed,
            )
        )
        out = check_output_path(output, input)
        parsed = read_batch(input, setup.blueprints)
        if parsed.lines == 0:
            raise ConfigError(f"{input}: has no request lines")
        if parsed.errors:
            for e in parsed.errors[:20]:
                _err(str(e))
            if len(parsed.errors) > 20:
                _err(f"... and {len(parsed.errors) - 20} more bad lines")
            if strict:
                _err(f"{len(parsed.errors)} bad line(s); nothing was run (--strict)")
                raise typer.Exit(EXIT_BAD_INPUT)
        if setup.note:
            _err(setup.note)
        sink = BatchSink(parsed, out, order)  # type: ignore[arg-type]
    except FanoutError as exc:
        _err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None

    submit = dict(setup.submit_kwargs)
    if deadline is not None:
        submit["deadline_s"] = deadline
    try:
        metrics, lines = asyncio.run(
            _run_batch(parsed.tasks, sink, setup.engine_kwargs, submit, progress)
        )
    except KeyboardInterrupt:
        sink.writer.abort()
        _err("interrupted; no output written")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except FanoutError as exc:
        sink.writer.abort()
        _err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None

    metrics["bad_lines"] = len(parsed.errors)
    metrics["output"] = str(out)
    metrics["output_lines"] = lines
    if json_summary:
        typer.echo(json.dumps(metrics, ensure_ascii=False))
    else:
        from fanout.progress import print_summary

        print_summary(metrics, sys.stdout)
        typer.echo(f"wrote {lines} lines to {out}")
    if metrics.get("cancel_reason") == INTERRUPTED:
        raise typer.Exit(EXIT_INTERRUPTED)
    ok = metrics["done"] == metrics["total"] and not parsed.errors
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


async def _run_batch(
    tasks: list[Any],
    sink: Any,
    engine_kwargs: dict[str, Any],
    submit_kwargs: dict[str, Any],
    show_progress: bool,
) -> tuple[dict[str, Any], int]:
    from fanout.engine.engine import Engine

    async with Engine(**engine_kwargs) as engine:
        run = engine.submit(tasks, kind="batch", **submit_kwargs)
        sink.attach(run)
        loop = asyncio.get_running_loop()

        def on_sigint() -> None:
            # first Ctrl-C: cancel, keep every result already paid for, write the file;
            # a second one interrupts for good
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            _err(
                "interrupted: cancelling the rest and writing what is done (Ctrl-C again to abort)"
            )
            run.cancel(INTERRUPTED)

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            if show_progress and sys.stderr.isatty() and tasks:
                from rich.console import Console

                from fanout.progress import LiveProgress

                await LiveProgress(run, Console(stderr=True)).follow()
            metrics = await run.wait()
            lines: int = await sink.finish(run)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        return metrics, lines


agents_app = typer.Typer(help="The agent blueprints: built in, yours, this project's.")
app.add_typer(agents_app, name="agents")


@agents_app.command("list")
def agents_list(config: ConfigOpt = None) -> None:
    """Every agent blueprint that can be used here, and where it comes from."""
    from fanout.setup import load_agents

    try:
        bps = load_agents(config)
    except FanoutError as exc:
        _err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    width = max((len(n) for n in bps), default=10)
    for name, bp in sorted(bps.items()):
        where = bp.origin if bp.source is None else f"{bp.origin}: {bp.source}"
        typer.echo(f"{name:<{width}}  {bp.output:<8}  {bp.lane or '-':<21}  {where}")
        if bp.description:
            typer.echo(f"{'':<{width}}  {bp.description}")


@agents_app.command("show")
def agents_show(
    name: Annotated[str, typer.Argument(help="The agent's name.")], config: ConfigOpt = None
) -> None:
    """One blueprint: its settings, inputs and prompt."""
    from fanout.setup import load_agents

    try:
        bps = load_agents(config)
    except FanoutError as exc:
        _err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    bp = bps.get(name)
    if bp is None:
        _err(f"unknown agent {name!r}; known agents: {', '.join(sorted(bps))}")
        raise typer.Exit(EXIT_BAD_INPUT)
    typer.echo(bp.describe())


@app.command(
    "sim-server", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def sim_server(ctx: typer.Context) -> None:
    """Serve the simulator over HTTP on loopback (OpenAI and Anthropic wire formats).

    Flags: --host, --port (8089), --rpm, --tpm, --faults, --latency, --seed, --stats-file.
    """
    from fanout.sim_server import main as sim_main

    raise typer.Exit(sim_main(list(ctx.args)))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
