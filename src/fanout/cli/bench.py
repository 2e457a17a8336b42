"""`fanout bench`: the seed notes' serial-vs-parallel comparison on the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fanout.cli.common import exits


def bench(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the pictures, bench.json and bench.db.")
    ] = Path("fanout-bench"),
    sets: Annotated[
        str,
        typer.Option(help="Which sets, comma-separated: agents-4, agents-8, agents-16, pipeline."),
    ] = "agents-4,agents-8,agents-16,pipeline",
    scale: Annotated[
        float, typer.Option(help="Duration multiplier: 0.02 makes the notes' 9 s last 180 ms.")
    ] = 0.02,
    concurrency: Annotated[int, typer.Option(help="Concurrency of the parallel runs.", min=1)] = 64,
    repeat: Annotated[int, typer.Option(help="Rounds per set; medians are shown.", min=1)] = 1,
) -> None:
    """Serial (Phase 4) against parallel (Phase 5): the seed notes' agent sets of 4, 8 and 16
    and the 55 -> 12 -> 4 -> 1 pipeline on the simulator; prints wall, ideal, speedup and
    share of ideal, and writes each run's timeline (PNG, HTML, trace) to --out."""
    from fanout.report.bench import format_rows, run_bench

    names = [s.strip() for s in sets.split(",") if s.strip()]
    typer.echo(
        f"serial (concurrency 1) vs parallel (concurrency {concurrency}) on the simulator; "
        f"durations x {scale:g}; wall = the run's own; {repeat} round(s), medians"
    )
    typer.echo(format_rows([])[0])
    with exits():
        run_bench(
            names,
            out,
            scale=scale,
            concurrency=concurrency,
            repeat=repeat,
            progress=typer.echo,
        )
    typer.echo(f"pictures of each run, bench.png and bench.json in {out}/")
