"""`fanout batch`: a JSONL file of requests in, one result line per input line out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from fanout.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    AttemptsOpt,
    BackendOpt,
    BaseUrlOpt,
    CacheOpt,
    CacheTtlOpt,
    CommandOpt,
    ConcurrencyOpt,
    ConfigOpt,
    DeadlineOpt,
    GraceOpt,
    JsonOpt,
    MaxCostOpt,
    MaxTokensOpt,
    ModelOpt,
    ProgressOpt,
    ProviderOpt,
    RayAddressOpt,
    RpmOpt,
    SeedOpt,
    SimFaultsOpt,
    SimLatencyOpt,
    TimeoutOpt,
    TpmOpt,
    engine_choice,
    err,
    exits,
    run_options,
    say_config_notes,
    say_if_capped,
)
from fanout.cli.follow import follow

if TYPE_CHECKING:
    from fanout.batch import LineError
    from fanout.batch.run import BatchOutcome

MAX_BAD_LINES_SHOWN = 20


def batch(
    input: Annotated[Path, typer.Argument(help="JSONL file: one request per line.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write results.")],
    config: ConfigOpt = None,
    concurrency: ConcurrencyOpt = None,
    provider: ProviderOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    command: CommandOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    timeout: TimeoutOpt = None,
    attempts: AttemptsOpt = None,
    deadline: DeadlineOpt = None,
    max_cost: MaxCostOpt = None,
    max_tokens: MaxTokensOpt = None,
    order: Annotated[str, typer.Option(help="Output order: input or completion.")] = "input",
    strict: Annotated[bool, typer.Option(help="Refuse to start if any line is bad.")] = False,
    max_line: Annotated[
        str,
        typer.Option(
            metavar="<size>",
            help="A longer line is refused (a bad line, not sent), e.g. 10MB, 500kB.",
        ),
    ] = "10MB",
    sim_latency: SimLatencyOpt = None,
    sim_faults: SimFaultsOpt = None,
    seed: SeedOpt = 0,
    backend: BackendOpt = None,
    ray_address: RayAddressOpt = None,
    cache: CacheOpt = True,
    cache_ttl: CacheTtlOpt = None,
    grace: GraceOpt = 10.0,
    progress: ProgressOpt = True,
    json_summary: JsonOpt = False,
) -> None:
    """Run every line of a JSONL file; write one result line per input line.

    The run is kept in the run store: after a crash or Ctrl-C, `fanout resume RUN` goes on
    with it, and nothing that finished is sent again."""
    from fanout.batch import parse_order
    from fanout.batch.parse import parse_size
    from fanout.batch.run import EveryLineBad, plan_batch, start_batch

    with exits():
        choice = engine_choice(
            config=config,
            provider=provider,
            model=model,
            base_url=base_url,
            command=command,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            timeout=timeout,
            attempts=attempts,
            sim_latency=sim_latency,
            sim_faults=sim_faults,
            seed=seed,
            backend=backend,
            ray_address=ray_address,
        )
        options = run_options(
            choice,
            cache=cache,
            cache_ttl=cache_ttl,
            deadline=deadline,
            grace=grace,
            max_cost=max_cost,
            max_tokens=max_tokens,
        )
        try:
            plan = plan_batch(
                input,
                output,
                parse_order(order),
                options,
                max_line_bytes=parse_size("--max-line", max_line),
            )
        except EveryLineBad as exc:
            show_bad_lines(exc.errors)
            err(exc.summary)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        say_config_notes(plan.setup)
        if plan.batch.errors and strict:
            show_bad_lines(plan.batch.errors)
            err(f"{len(plan.batch.errors)} bad line(s); nothing was run (--strict)")
            raise typer.Exit(EXIT_BAD_INPUT)
        done = follow(
            lambda: start_batch(plan, options),
            progress=progress,
            after_start=lambda: show_bad_lines(plan.batch.errors),
        )
    report_batch(done, json_summary)


def show_bad_lines(errors: Sequence[LineError]) -> None:
    for e in errors[:MAX_BAD_LINES_SHOWN]:
        err(str(e))
    if len(errors) > MAX_BAD_LINES_SHOWN:
        err(f"... and {len(errors) - MAX_BAD_LINES_SHOWN} more bad lines")


def report_batch(done: BatchOutcome, json_summary: bool) -> NoReturn:
    """Print a batch run's summary; exit with a code that says how it went."""
    summary = done.summary
    if json_summary:
        typer.echo(json.dumps(summary, ensure_ascii=False))
    else:
        for line in summary_text(done):
            typer.echo(line)
    rid = done.run_id
    say_if_capped(rid, summary)
    if done.interrupted:
        err(f"run {rid} interrupted; resume with: fanout resume {rid}")
        err(f"what is done so far: fanout results {rid} -o FILE")
        raise typer.Exit(EXIT_INTERRUPTED)
    if not json_summary:
        typer.echo(f"wrote {done.lines} lines to {done.output}")
    if done.ok:
        raise typer.Exit(EXIT_OK)
    err(f"exit {EXIT_FAILED}: {why_not_ok(done)}; each has its output line, with the error")
    raise typer.Exit(EXIT_FAILED)


def summary_text(done: BatchOutcome) -> list[str]:
    """The summary as aligned `label  value` lines (plain text: no padding at line ends)."""
    from fanout.report import aligned, summary_lines

    summary = done.summary
    rows = summary_lines(summary)
    if done.bad_lines:
        rows.insert(1, ("bad lines", f"{len(done.bad_lines)}, not run ({_see(done.bad_lines)})"))
    return aligned(rows)


def bad_lines_text(lines: Sequence[int]) -> str:
    """ "1 bad line, see line 7" / "3 bad lines, see lines 2, 7, 9" (the first few)."""
    n = len(lines)
    return f"{n} bad line{'s' if n != 1 else ''}, {_see(lines)}"


def _see(lines: Sequence[int], shown: int = 5) -> str:
    listed = ", ".join(str(x) for x in lines[:shown]) + (", ..." if len(lines) > shown else "")
    return f"see line{'s' if len(lines) != 1 else ''} {listed}"


def why_not_ok(done: BatchOutcome) -> str:
    """Why a finished batch run exits 1: its failed (or unfinished) tasks and bad lines."""
    s = done.summary
    parts = []
    not_done = s["total"] - s["done"]
    if s["failed"]:
        parts.append(f"{s['failed']} task{'s' if s['failed'] != 1 else ''} failed")
    if not_done - s["failed"]:
        parts.append(f"{not_done - s['failed']} not done (skipped or cancelled)")
    if done.bad_lines:
        parts.append(bad_lines_text(done.bad_lines))
    return ", ".join(parts)
