"""The `fanout` command. Thin: parse arguments, call the library, print.

Exit codes: 0 every task done; 1 some task failed (or the run was cancelled); 2 bad input
or configuration (nothing was run and nothing written); 130 interrupted (the run is kept,
resumable with `fanout resume RUN`; the output file is written when the run ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from fanout.errors import ConfigError, FanoutError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

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


CacheOpt = Annotated[
    bool, typer.Option("--cache/--no-cache", help="Use the result cache (answers kept by request).")
]
CacheTtlOpt = Annotated[
    str | None,
    typer.Option(help="Cached answers older than this are not used, e.g. 3600, 12h, 7d."),
]
GraceOpt = Annotated[
    float,
    typer.Option(help="Seconds calls in flight may take to finish after a first Ctrl-C.", min=0),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")]
ProgressOpt = Annotated[bool, typer.Option(help="Live progress on stderr (only on a terminal).")]


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
    cache: CacheOpt = True,
    cache_ttl: CacheTtlOpt = None,
    grace: GraceOpt = 10.0,
    progress: ProgressOpt = True,
    json_summary: JsonOpt = False,
) -> None:
    """Run every line of a JSONL file; write one result line per input line.

    The run is kept in the run store: after a crash or Ctrl-C, `fanout resume RUN` goes on
    with it, and nothing that finished is sent again."""
    from fanout.batch import BatchSink, check_output_path, read_batch
    from fanout.batch_run import BatchOptions, batch_config, start_batch
    from fanout.engine.engine import new_run_id
    from fanout.setup import EngineChoice, engine_setup

    try:
        if order not in ("input", "completion"):
            raise ConfigError(f"--order {order!r}: use 'input' or 'completion'")
        ttl = _duration("--cache-ttl", cache_ttl)
        choice = EngineChoice(
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
        setup = engine_setup(choice)
        out = check_output_path(output, input)
        parsed = read_batch(input, setup.blueprints)
        if parsed.lines == 0:
            raise ConfigError(f"{input}: has no request lines")
        if parsed.errors and strict:
            _bad_lines(parsed.errors)
            _err(f"{len(parsed.errors)} bad line(s); nothing was run (--strict)")
            raise typer.Exit(EXIT_BAD_INPUT)
        sink = BatchSink(parsed, out, order)  # type: ignore[arg-type]
    except FanoutError as exc:
        _err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None

    run_id = new_run_id()
    submit = dict(setup.submit_kwargs)
    submit["run_id"] = run_id
    if deadline is not None:
        submit["deadline_s"] = deadline
    snapshot = batch_config(choice, parsed, input, out, order)

    def started(rid: str) -> None:
        typer.echo(f"run {rid} (resume with: fanout resume {rid})", err=True)
        _bad_lines(parsed.errors)
        if setup.note:
            _err(setup.note)

    opts = BatchOptions(
        cache=cache, cache_ttl_s=ttl, grace_s=grace, progress=progress, on_start=started, say=_err
    )
    _finish_batch(
        lambda: start_batch(parsed, sink, setup.engine_kwargs, submit, snapshot, opts),
        sink,
        json_summary,
        len(parsed.errors),
    )


def _bad_lines(errors: list[Any]) -> None:
    for e in errors[:20]:
        _err(str(e))
    if len(errors) > 20:
        _err(f"... and {len(errors) - 20} more bad lines")


def _finish_batch(start: Any, sink: Any, json_summary: bool, bad_lines: int) -> None:
    """Run a batch coroutine; print its summary; exit with a code that says how it went."""
    try:
        outcome = asyncio.run(start())
    except KeyboardInterrupt:
        if sink is not None:
            sink.writer.abort()
        _err("interrupted; no output written")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except FanoutError as exc:
        if sink is not None:
            sink.writer.abort()
        _err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    metrics = outcome.metrics
    metrics["bad_lines"] = bad_lines
    if outcome.lines is not None:
        metrics["output_lines"] = outcome.lines
    if json_summary:
        typer.echo(json.dumps(metrics, ensure_ascii=False))
    else:
        from fanout.progress import print_summary

        print_summary(metrics, sys.stdout)
        if metrics.get("cached"):
            typer.echo(f"from the cache   {metrics['cached']} answers (not sent, no tokens)")
    rid = outcome.run_id
    if outcome.lines is None:
        _err(f"run {rid} interrupted; resume with: fanout resume {rid}")
        _err(f"what is done so far: fanout results {rid} -o FILE")
        raise typer.Exit(EXIT_INTERRUPTED)
    if not json_summary:
        typer.echo(f"wrote {outcome.lines} lines to {outcome.output}")
    ok = metrics["done"] == metrics["total"] and not bad_lines
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


def _duration(flag: str, value: str | None) -> float | None:
    if value is None:
        return None
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    v = value.strip().lower()
    scale = units.get(v[-1:])
    try:
        n = float(v[:-1] if scale is not None else v) * (scale or 1.0)
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: give seconds or a number with s, m, h or d") from None
    if n <= 0:
        raise ConfigError(f"{flag} {value!r}: must be positive")
    return n


RunArg = Annotated[str, typer.Argument(help="The run id (or a unique prefix of it).")]


@app.command()
def resume(
    run: RunArg,
    reconfigure: Annotated[
        bool,
        typer.Option(help="Accept changed settings: re-run the tasks whose request changed."),
    ] = False,
    concurrency: Annotated[
        int | None, typer.Option(help="Calls in flight at once (default: as before).", min=1)
    ] = None,
    cache: CacheOpt = True,
    cache_ttl: CacheTtlOpt = None,
    grace: GraceOpt = 10.0,
    progress: ProgressOpt = True,
    json_summary: JsonOpt = False,
) -> None:
    """Go on with a run after a crash, kill -9 or Ctrl-C: finished tasks are not sent again;
    the output file is rewritten from the store."""
    from fanout.batch_run import BatchOptions, resume_batch

    try:
        run_id = _find_run(run)
        ttl = _duration("--cache-ttl", cache_ttl)
        kind = _run_kind(run_id)
    except FanoutError as exc:
        _err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if kind == "canvas":
        from fanout.cli_canvas import resume_canvas_cmd

        resume_canvas_cmd(run_id, reconfigure, cache, grace, progress, json_summary)
        return

    def started(rid: str) -> None:
        typer.echo(f"run {rid} resumed (resume again with: fanout resume {rid})", err=True)

    opts = BatchOptions(
        cache=cache, cache_ttl_s=ttl, grace_s=grace, progress=progress, on_start=started, say=_err
    )
    _finish_batch(
        lambda: resume_batch(run_id, reconfigure=reconfigure, opts=opts, concurrency=concurrency),
        None,
        json_summary,
        0,
    )


def _run_kind(run_id: str) -> str | None:
    from fanout.store import queries
    from fanout.store.sqlite import opened

    with opened() as db:
        info = queries.run_info(db, run_id)
    return None if info is None else str(info["kind"])


def _find_run(ref: str) -> str:
    from fanout.store import queries
    from fanout.store.sqlite import default_path, opened

    with opened() as db:
        run_id = queries.find_run(db, ref)
    if run_id is None:
        raise FanoutError(f"no run {ref!r} in the run store ({default_path()}); see fanout runs")
    return run_id


@app.command()
def runs(
    limit: Annotated[int, typer.Option(help="How many of the latest runs.", min=1)] = 20,
    json_out: JsonOpt = False,
) -> None:
    """The latest runs: id, kind, status, done/total, failed, started, wall time."""
    from fanout.report import format_runs
    from fanout.store.overview import list_runs
    from fanout.store.sqlite import opened

    with _store_errors(), opened() as db:
        rows = list_runs(db, limit)
    if json_out:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        typer.echo("no runs yet")
        return
    for line in format_runs(rows):
        typer.echo(line)


@app.command()
def status(run: RunArg, json_out: JsonOpt = False) -> None:
    """Where a run is: counts by state and lane, retries, errors by class, tokens, ETA."""
    from fanout.report import format_status
    from fanout.store.overview import run_status
    from fanout.store.sqlite import opened

    with _store_errors():
        run_id = _find_run(run)
        with opened() as db:
            st = run_status(db, run_id)
    assert st is not None
    if json_out:
        typer.echo(json.dumps(st, ensure_ascii=False))
        return
    for line in format_status(st):
        typer.echo(line)


@app.command()
def report(run: RunArg, json_out: JsonOpt = False) -> None:
    """A run's metrics: wall, serial estimate, speedup, utilisation, p50/p95 per agent,
    retries, tokens, errors (the numbers `run.metrics()` gives)."""
    from fanout.report import report_lines, run_report
    from fanout.store.sqlite import opened

    with _store_errors():
        run_id = _find_run(run)
        with opened() as db:
            m = run_report(db, run_id)
    assert m is not None
    if json_out:
        typer.echo(json.dumps(m, ensure_ascii=False))
        return
    width = max(len(label) for label, _ in report_lines(m))
    for label, value in report_lines(m):
        typer.echo(f"{label:<{width}}  {value}")


@app.command()
def cancel(run: RunArg) -> None:
    """Cancel a run; if another process is running it, it stops within a second."""
    from fanout.store import queries
    from fanout.store.sqlite import opened

    with _store_errors():
        run_id = _find_run(run)
        with opened() as db:
            outcome = queries.request_cancel(db, run_id, "cancelled with fanout cancel")
    if outcome == "asked":
        typer.echo(f"asked the process running {run_id} to cancel it")
    elif outcome == "cancelled":
        typer.echo(f"run {run_id} cancelled (fanout resume {run_id} would go on with it)")
    else:
        typer.echo(f"run {run_id} had already ended: {outcome}")


@app.command()
def results(
    run: RunArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write them.")],
) -> None:
    """Export a run's results now, complete or partial (unfinished tasks are left out)."""
    from fanout.batch_run import export_results
    from fanout.store.sqlite import opened

    with _store_errors():
        run_id = _find_run(run)
        with opened() as db:
            lines, have, total = export_results(db, run_id, output)
    typer.echo(f"wrote {lines} lines to {output} ({have} of {total} tasks have a result)")


cache_app = typer.Typer(help="The result cache: answers kept by request, reused by any run.")
app.add_typer(cache_app, name="cache")


@cache_app.command("stats")
def cache_stats(json_out: JsonOpt = False) -> None:
    """How many answers the cache holds, their size and age, and how often they were used."""
    from fanout.store import queries
    from fanout.store.sqlite import opened

    with _store_errors(), opened() as db:
        st = queries.cache_stats(db)
    if json_out:
        typer.echo(json.dumps(st))
        return
    typer.echo(f"entries: {st['entries']}  ({st['text_bytes']:,} bytes of answers)")
    typer.echo(f"hits: {st['hits']} (tasks answered from the cache)")
    if st["entries"]:
        from fanout.report import _when

        typer.echo(f"oldest: {_when(st['oldest'])}  newest: {_when(st['newest'])}")


@cache_app.command("clear")
def cache_clear(
    older_than: Annotated[
        str | None, typer.Option(help="Only answers older than this, e.g. 7d.")
    ] = None,
) -> None:
    """Forget cached answers (all, or the old ones); runs and their results are kept."""
    from fanout.store import queries
    from fanout.store.sqlite import opened

    with _store_errors():
        age = _duration("--older-than", older_than)
        with opened() as db:
            n = queries.cache_clear(db, age)
    typer.echo(f"removed {n} cached answers")


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except FanoutError as exc:
        _err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None


from fanout.cli_canvas import app as canvas_app  # noqa: E402

app.add_typer(canvas_app, name="canvas")

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
