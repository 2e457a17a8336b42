"""Durable runs: `fanout resume | runs | status | report | results | cancel | cache`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from fanout.cli.common import (
    EXIT_BAD_INPUT,
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
    RunArg,
    SeedOpt,
    SimFaultsOpt,
    SimLatencyOpt,
    TimeoutOpt,
    TpmOpt,
    engine_choice,
    err,
    exits,
    overrides,
)
from fanout.cli.follow import follow
from fanout.errors import ConfigError

cache_app = typer.Typer(help="The result cache: answers kept by request, reused by any run.")


def resume(
    run: RunArg,
    reconfigure: Annotated[
        bool,
        typer.Option(help="Accept changed settings: re-run the tasks whose request changed."),
    ] = False,
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
    sim_latency: SimLatencyOpt = None,
    sim_faults: SimFaultsOpt = None,
    seed: SeedOpt = None,
    backend: BackendOpt = None,
    ray_address: RayAddressOpt = None,
    cache: CacheOpt = None,
    cache_ttl: CacheTtlOpt = None,
    grace: GraceOpt = None,
    retry_failed: Annotated[
        str | None,
        typer.Option(
            "--retry-failed",
            metavar="[=KINDS]",
            help="Run the failed tasks again too, with fresh attempts: all of them, or "
            "--retry-failed=transient,timeout for those error classes or kinds.",
        ),
    ] = None,
    progress: ProgressOpt = True,
    json_summary: JsonOpt = False,
) -> None:
    """Go on with a run after a crash, kill -9 or Ctrl-C: finished tasks are not sent again.

    The run goes on with every setting it was started with; a flag given here changes that
    setting (one that changes the answers needs --reconfigure). A batch's output file is
    rewritten from the store; a canvas gets every target's notes."""
    from fanout.launch import find_run, run_kind

    with exits():
        run_id = find_run(run)
        note = finished_note(run_id) if retry_failed is None else None
        changes = overrides(
            engine_choice(
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
            ),
            cache=cache,
            cache_ttl=cache_ttl,
            deadline=deadline,
            grace=grace,
            max_cost=max_cost,
            max_tokens=max_tokens,
        )
        again = retry_kinds(retry_failed)
        if run_kind(run_id) == "canvas":
            from fanout.canvas.run import resume_canvas
            from fanout.cli.canvas import report_canvas

            report_canvas(
                follow(
                    lambda: resume_canvas(
                        run_id, reconfigure=reconfigure, overrides=changes, retry_failed=again
                    ),
                    progress=progress,
                    resumed=True,
                    after_start=say(note),
                ),
                json_summary,
            )
        from fanout.batch.run import resume_batch
        from fanout.cli.batch import report_batch

        batch_done = follow(
            lambda: resume_batch(
                run_id, reconfigure=reconfigure, overrides=changes, retry_failed=again
            ),
            progress=progress,
            resumed=True,
            after_start=say(note),
        )
    report_batch(batch_done, json_summary)


def say(note: str | None) -> Callable[[], None] | None:
    return None if note is None else lambda: err(note)


def finished_note(run_id: str) -> str | None:
    """What to say on resuming a run whose every task has ended (None for any other): it
    is finished, how it ended, and how to run its failed tasks again. The resume still
    goes on (it rewrites the output, sends nothing again, exits as the run ended)."""
    from fanout.store.overview import run_status
    from fanout.store.queries import run_info
    from fanout.store.sqlite import opened

    with opened() as db:
        # the status first: the full one counts every task (seconds at a million)
        info = run_info(db, run_id, counts=False)
        if info is None or info["status"] not in ("done", "failed"):
            return None
        st = run_status(db, run_id)
    if st is None or st["status"] not in ("done", "failed"):
        return None
    states = st["states"]
    ended = sum(states.get(s, 0) for s in ("done", "failed", "skipped"))
    if ended < st["total"]:  # cancelled tasks: a resume runs them
        return None
    failed = states.get("failed", 0)
    counts = f"{states.get('done', 0)} done, {failed} failed"
    if states.get("skipped"):
        counts += f", {states['skipped']} skipped"
    again = f"; to run the failed ones again: fanout resume {run_id} --retry-failed"
    return f"run {run_id} had finished ({counts}, of {st['total']}): nothing to send" + (
        again if failed else ""
    )


#: a bare `--retry-failed` (typer options take no optional value): `main` spells it out
RETRY_ALL = "all"


def retry_kinds(value: str | None) -> bool | frozenset[str]:
    """`--retry-failed[=KINDS]` as `Engine.resume` takes it."""
    if value is None:
        return False
    kinds = frozenset(k.strip() for k in value.split(",") if k.strip())
    if not kinds:
        raise ConfigError("--retry-failed=: name error classes or kinds, e.g. transient,timeout")
    return True if RETRY_ALL in kinds else kinds


def runs(
    limit: Annotated[int, typer.Option(help="How many of the latest runs.", min=1)] = 20,
    json_out: JsonOpt = False,
) -> None:
    """The latest runs: id, kind, status, done/total, failed, started, wall time."""
    from fanout.report import format_runs
    from fanout.store.overview import list_runs
    from fanout.store.sqlite import opened

    with exits(), opened() as db:
        rows = list_runs(db, limit)
    if json_out:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        typer.echo("no runs yet")
        return
    for line in format_runs(rows):
        typer.echo(line)


def status(run: RunArg, json_out: JsonOpt = False) -> None:
    """Where a run is: counts by state and lane, retries, errors by class, tokens, ETA."""
    from fanout.launch import find_run
    from fanout.report import format_status
    from fanout.store.overview import run_status
    from fanout.store.sqlite import opened

    with exits():
        run_id = find_run(run)
        with opened() as db:
            st = run_status(db, run_id)
    assert st is not None
    if json_out:
        typer.echo(json.dumps(st, ensure_ascii=False))
        return
    for line in format_status(st):
        typer.echo(line)


PriceListOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--price",
        metavar="MODEL=IN/OUT",
        help="Dollars per million tokens in and out for MODEL, over the price table and "
        "the config's prices: (repeatable), e.g. --price gpt-4o=2.5/10.",
    ),
]


def report(
    run: RunArg,
    json_out: JsonOpt = False,
    price: PriceListOpt = None,
    config: ConfigOpt = None,
    html: Annotated[
        Path | None, typer.Option(help="Write the timeline as one self-contained HTML file.")
    ] = None,
    png: Annotated[
        Path | None,
        typer.Option(help="Write the timeline as a PNG (needs matplotlib: the report extra)."),
    ] = None,
    trace: Annotated[
        Path | None, typer.Option(help="Write Chrome trace JSON (Perfetto, chrome://tracing).")
    ] = None,
) -> None:
    """A run's metrics: wall, serial estimate, speedup, utilisation, p50/p95 per agent,
    retries, tokens, errors (the numbers `run.metrics()` gives); throughput, cost, peak
    memory; where the time went (waiting on dependencies, lanes, rate limits, backoff,
    running) as shares, per lane and for the slowest tasks. --html, --png and --trace
    write its timeline instead."""
    from fanout.config import load_config
    from fanout.engine.budget import Price
    from fanout.launch import find_run
    from fanout.report import report_lines, report_prices, run_report, where_time_went
    from fanout.store.sqlite import opened

    with exits():
        if html or png or trace:
            from fanout.report.pictures import run_pictures

            if json_out:
                raise ConfigError("--json prints the text report's numbers: drop it or the files")
            with opened() as db:
                written = run_pictures(db, find_run(run), html=html, png=png, trace=trace)
            for line in written:
                typer.echo(line)
            return
        cfg = load_config(config)
        table = {m: Price(p.input, p.output) for m, p in cfg.prices.items()}
        prices = report_prices(table, price or [])
        run_id = find_run(run)
        with opened() as db:
            m = run_report(db, run_id)
            if m is not None:
                where_time_went(db, run_id, m, prices)
    assert m is not None
    if json_out:
        typer.echo(json.dumps(m, ensure_ascii=False))
        return
    width = max(len(label) for label, _ in report_lines(m))
    for label, value in report_lines(m):
        typer.echo(f"{label:<{width}}  {value}")


def cancel(run: RunArg) -> None:
    """Cancel a run; if another process is running it, it stops within a second."""
    from fanout.launch import find_run
    from fanout.store import queries
    from fanout.store.sqlite import opened

    with exits():
        run_id = find_run(run)
        with opened() as db:
            outcome = queries.request_cancel(db, run_id, "cancelled with fanout cancel")
    if outcome == "asked":
        typer.echo(f"asked the process running {run_id} to cancel it")
    elif outcome == "cancelled":
        typer.echo(f"run {run_id} cancelled (fanout resume {run_id} would go on with it)")
    else:
        typer.echo(f"run {run_id} had already ended: {outcome}")


def results(
    run: RunArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write them.")],
) -> None:
    """Export a run's results now, complete or partial (unfinished tasks are left out)."""
    from fanout.batch.run import export_results
    from fanout.launch import find_run
    from fanout.store.overview import run_status
    from fanout.store.sqlite import opened

    with exits():
        run_id = find_run(run)
        with opened() as db:
            st = run_status(db, run_id)
            lines, have, total = export_results(db, run_id, output)
    if st is not None and st["status"] == "running":
        done = st["states"].get("done", 0)
        err(
            f"run {run_id} is still running ({done} of {total} done so far): these are the "
            "results so far; export again when it ends"
        )
    typer.echo(f"wrote {lines} lines to {output} ({have} of {total} tasks have a result)")


@cache_app.command("stats", short_help="How many answers the cache holds, how old, how used.")
def cache_stats(json_out: JsonOpt = False) -> None:
    """How many answers the cache holds, their size and age, and how often they were used."""
    from fanout.report import when
    from fanout.store import queries
    from fanout.store.sqlite import opened

    with exits(), opened() as db:
        st = queries.cache_stats(db)
    if json_out:
        typer.echo(json.dumps(st))
        return
    typer.echo(f"entries: {st['entries']}  ({st['text_bytes']:,} bytes of answers)")
    typer.echo(f"hits: {st['hits']} (tasks answered from the cache)")
    if st["entries"]:
        typer.echo(f"oldest: {when(st['oldest'])}  newest: {when(st['newest'])}")


@cache_app.command("clear", short_help="Forget cached answers (runs and results are kept).")
def cache_clear(
    older_than: Annotated[
        str | None, typer.Option(help="Only answers older than this, e.g. 7d.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
) -> None:
    """Forget cached answers (all, or the old ones); runs and their results are kept."""
    from fanout.launch import parse_duration
    from fanout.store import queries
    from fanout.store.sqlite import opened

    with exits():
        age = parse_duration("--older-than", older_than)
        if not yes:
            with opened() as db:
                entries = queries.cache_stats(db)["entries"]
            which = f"cached answers older than {older_than}" if older_than else "cached answers"
            if not entries:
                typer.echo("the cache is empty")
                return
            if not sys.stdin.isatty():
                err(f"this would remove {which} (of {entries}); add --yes to do it")
                raise typer.Exit(EXIT_BAD_INPUT)
            if not typer.confirm(f"remove {which} (of {entries})?", default=False):
                typer.echo("nothing removed")
                return
        with opened() as db:
            n = queries.cache_clear(db, age)
    typer.echo(f"removed {n} cached answers")
