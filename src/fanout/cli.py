"""The `fanout` command. Thin: parse arguments, call the library, print.

Exit codes: 0 every task done; 1 some task failed (or the run was cancelled); 2 bad input
or configuration (nothing was run and nothing written); 130 interrupted (the output file is
still written, unfinished lines marked cancelled; a second Ctrl-C aborts without it).
"""

from __future__ import annotations

import asyncio
import json
import os
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

# providers that later versions add; naming one now is a config error, never a fall-back
_KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def _err(message: str) -> None:
    typer.echo(f"fanout: {message}", err=True)


@app.callback()
def _root() -> None:
    """Run many LLM agent calls at once, fast and safely."""


@app.command()
def batch(
    input: Annotated[Path, typer.Argument(help="JSONL file: one request per line.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write results.")],
    concurrency: Annotated[int, typer.Option(help="Calls in flight at once.", min=1)] = 16,
    provider: Annotated[
        str | None, typer.Option(help="Provider to call (default: the built-in simulator).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model for lines that name none.")] = None,
    rpm: Annotated[float | None, typer.Option(help="Requests per minute budget.")] = None,
    tpm: Annotated[float | None, typer.Option(help="Tokens per minute budget.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per attempt.")] = 120.0,
    attempts: Annotated[int, typer.Option(help="Attempts per task (1 = no retry).", min=1)] = 3,
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

    try:
        if order not in ("input", "completion"):
            raise ConfigError(f"--order {order!r}: use 'input' or 'completion'")
        engine_kwargs, note = _engine_options(
            provider=provider,
            model=model,
            rpm=rpm,
            tpm=tpm,
            concurrency=concurrency,
            timeout=timeout,
            attempts=attempts,
            sim_latency=sim_latency,
            sim_faults=sim_faults,
            seed=seed,
        )
        out = check_output_path(output, input)
        parsed = read_batch(input)
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
        if note:
            _err(note)
        sink = BatchSink(parsed, out, order)  # type: ignore[arg-type]
    except FanoutError as exc:
        _err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None

    try:
        metrics, lines = asyncio.run(
            _run_batch(parsed.tasks, sink, engine_kwargs, deadline, progress)
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
    deadline: float | None,
    show_progress: bool,
) -> tuple[dict[str, Any], int]:
    from fanout.engine.engine import Engine

    async with Engine(**engine_kwargs) as engine:
        run = engine.submit(tasks, kind="batch", deadline_s=deadline)
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


def _engine_options(
    *,
    provider: str | None,
    model: str | None,
    rpm: float | None,
    tpm: float | None,
    concurrency: int,
    timeout: float,
    attempts: int,
    sim_latency: str | None,
    sim_faults: str | None,
    seed: int,
) -> tuple[dict[str, Any], str | None]:
    """Engine keyword arguments from CLI flags, and a one-line note for the user."""
    from fanout.engine.limits import ProviderLimits
    from fanout.engine.retry import RetryPolicy
    from fanout.providers.sim import SimConfig, SimProvider, parse_faults, parse_latency

    note = None
    name = provider or "sim"
    if name != "sim":
        var = _KEY_VARS.get(name)
        if var is not None and not os.environ.get(var):
            raise ConfigError(
                f"--provider {name} needs an API key in the environment variable {var}; "
                "set it, or leave out --provider to use the built-in simulator"
            )
        raise ConfigError(f"--provider {name!r} is not available in this version; available: sim")
    if timeout <= 0:
        raise ConfigError(f"--timeout {timeout}: must be positive")
    if (rpm is not None and rpm <= 0) or (tpm is not None and tpm <= 0):
        raise ConfigError("--rpm and --tpm must be positive")
    try:
        sim_kwargs: dict[str, Any] = dict(parse_latency(sim_latency)) if sim_latency else {}
        faults = parse_faults(sim_faults) if sim_faults else {}
        sim = SimProvider(SimConfig(seed=seed, faults=faults, **sim_kwargs))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if provider is None:
        note = "no provider configured: using the built-in simulator (sim); see --provider"
    limits = {}
    if rpm is not None or tpm is not None:
        limits[name] = ProviderLimits(rpm=rpm, tpm=tpm)
    kwargs: dict[str, Any] = {
        "providers": {"sim": sim},
        "provider": name,
        "concurrency": concurrency,
        "timeout": timeout,
        "retry": RetryPolicy(attempts=attempts),
        "limits": limits,
        "seed": seed,
    }
    if model:
        kwargs["model"] = model
    return kwargs, note


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
