"""`fanout canvas plan | run | restore`: the Canvas learning workflow on the command line.

Thin, like the rest of the CLI: the library (`fanout.canvas`, `fanout.canvas_run`) does the
work. Exit codes as everywhere: 0 every task done, 1 some failed or skipped for a failure,
2 bad input or configuration (nothing run, nothing written), 130 interrupted (resumable).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from fanout.errors import FanoutError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(help="The Canvas learning workflow: explain marked canvas nodes in parallel.")

CanvasArg = Annotated[Path, typer.Argument(help="An Obsidian .canvas file.")]
AgentsOpt = Annotated[
    str | None, typer.Option(help="Agents to run on every target, comma-separated.")
]
SmartOpt = Annotated[
    bool | None,
    typer.Option(
        "--smart/--no-smart",
        help="Score first, then the agents the verdict calls for (the default without --agents).",
    ),
]
YellowOpt = Annotated[
    str,
    typer.Option("--yellow", help='Colour of the learner\'s nodes: "3" (spec yellow), "6"...'),
]
IdsOpt = Annotated[str | None, typer.Option(help="Target these node ids (comma-separated).")]
GroupOpt = Annotated[str | None, typer.Option(help="Target the nodes inside this group.")]
SamplesOpt = Annotated[int, typer.Option(help="Scoring samples per target (median, spread).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="fanout.yaml to use.")]


def _err(message: str) -> None:
    typer.echo(f"fanout: {message}", err=True)


def _split(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _choice(
    path: Path,
    agents: str | None,
    smart: bool | None,
    yellow: str,
    ids: str | None,
    group: str | None,
    samples: int,
    **kw: Any,
) -> Any:
    from fanout.canvas_run import CanvasChoice

    return CanvasChoice(
        path=str(path.resolve()),
        agents=_split(agents),
        smart=smart,
        colour=yellow,
        ids=_split(ids),
        group=group,
        samples=samples,
        **kw,
    )


@app.command("plan")
def plan_cmd(
    canvas: CanvasArg,
    agents: AgentsOpt = None,
    smart: SmartOpt = None,
    yellow: YellowOpt = "3",
    ids: IdsOpt = None,
    group: GroupOpt = None,
    samples: SamplesOpt = 1,
    config: ConfigOpt = None,
) -> None:
    """Show the targets, their context and the tasks a run would make; write nothing."""
    from fanout.canvas_run import plan
    from fanout.setup import EngineChoice, engine_setup

    try:
        choice = _choice(canvas, agents, smart, yellow, ids, group, samples)
        job = plan(choice, engine_setup(EngineChoice(config=config)))
    except FanoutError as exc:
        _err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    sel = job.selection
    typer.echo(f"canvas: {job.path}")
    typer.echo(
        f"targets: {len(sel.targets)} (colour {yellow!r})"
        + (f", skipped {len(sel.skipped)}" if sel.skipped else "")
    )
    if not sel.targets and sel.hint is not None:
        typer.echo(f"hint: {sel.hint.message}")
    for w in sel.warnings:
        typer.echo(f"warning: {w}")
    for s in sel.skipped:
        typer.echo(f"skipped: {s}")
    mode = "smart: scoring first, then by verdict" if job.smart else "agents"
    typer.echo(f"{mode}: {', '.join(job.agents)}")
    by_target: dict[str, list[Any]] = {}
    for t in job.tasks:
        by_target.setdefault(t.partition or "", []).append(t)
    for target in sel.targets:
        typer.echo("")
        typer.echo(f"● {target.node_id}: {_short(target.text)}")
        if target.question:
            typer.echo(f"  question: {_short(target.question)}")
        if target.group_label:
            typer.echo(f"  group: {target.group_label}")
        for t in by_target.get(target.node_id, []):
            cond = "  (if the verdict selects it)" if t.when is not None else ""
            typer.echo(f"  - {t.key}  [{t.lane}]{cond}")
    typer.echo("")
    typer.echo(f"{len(job.tasks)} tasks; nothing was written")


def _short(text: str, n: int = 60) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"


@app.command("run")
def run_cmd(
    canvas: CanvasArg,
    agents: AgentsOpt = None,
    smart: SmartOpt = None,
    yellow: YellowOpt = "3",
    ids: IdsOpt = None,
    group: GroupOpt = None,
    samples: SamplesOpt = 1,
    aggregate: Annotated[
        str, typer.Option(help="individual | merged | decomposition | score")
    ] = "individual",
    recolour: Annotated[
        bool, typer.Option(help="Recolour the question nodes by the scoring verdict.")
    ] = False,
    notes_dir: Annotated[
        str | None, typer.Option(help="Vault-relative folder for the notes.")
    ] = None,
    node_colour: Annotated[str, typer.Option(help="Colour of the new file nodes.")] = "5",
    config: ConfigOpt = None,
    provider: Annotated[str | None, typer.Option(help="Provider (default: simulator).")] = None,
    model: Annotated[str | None, typer.Option(help="Model.")] = None,
    base_url: Annotated[str | None, typer.Option(help="Base URL of the provider.")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Calls at once.")] = None,
    sim_latency: Annotated[str | None, typer.Option(help="Simulator latency.")] = None,
    sim_faults: Annotated[str | None, typer.Option(help="Simulator faults.")] = None,
    cache: Annotated[bool, typer.Option(help="Reuse cached answers.")] = True,
    progress: Annotated[bool, typer.Option(help="Live progress on a terminal.")] = True,
    json_summary: Annotated[bool, typer.Option("--json", help="Summary as JSON.")] = False,
) -> None:
    """Explain every target with the chosen agents at once; write the results back."""
    import json

    from fanout.aggregate import MODES
    from fanout.canvas_run import RunOptions, plan, start_canvas
    from fanout.setup import EngineChoice, engine_setup

    try:
        if aggregate not in MODES:
            raise FanoutError(f"--aggregate {aggregate!r}: use one of {', '.join(MODES)}")
        choice = _choice(
            canvas,
            agents,
            smart,
            yellow,
            ids,
            group,
            samples,
            mode=aggregate,
            recolour=recolour,
            notes_dir=notes_dir,
            node_colour=node_colour,
        )
        echoice = EngineChoice(
            config=config,
            provider=provider,
            model=model,
            base_url=base_url,
            concurrency=concurrency,
            sim_latency=sim_latency,
            sim_faults=sim_faults,
        )
        setup = engine_setup(echoice)
        job = plan(choice, setup)
        if not job.targets:
            hint = f" ({job.selection.hint.message})" if job.selection.hint else ""
            raise FanoutError(f"{canvas}: no target nodes of colour {yellow!r}{hint}")
        choice.options()  # check the write options before anything runs
    except FanoutError as exc:
        _err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if setup.note:
        _err(setup.note)
    opts = RunOptions(
        cache=cache,
        progress=progress,
        on_start=lambda rid: typer.echo(f"run {rid} (resume with: fanout resume {rid})", err=True),
        say=_err,
    )
    try:
        outcome = asyncio.run(start_canvas(choice, echoice, setup, job, opts))
    except FanoutError as exc:
        _err(exc.message)
        raise typer.Exit(EXIT_FAILED) from None
    _report(outcome, json_summary, json)


def _report(outcome: Any, as_json: bool, json: Any) -> None:
    m = outcome.metrics
    notes = outcome.report.notes
    failures = []
    for t in outcome.job.tasks:
        r = t.run.result(t) if t.run is not None else None
        if r is not None and not r.ok and not (r.error and r.error.kind == "not_selected"):
            failures.append((t.key, r.error.message if r.error else str(r.state)))
    if as_json:
        out = {
            **m,
            "notes": [str(n.vault_path) for n in notes],
            "nodes_added": sum(1 for n in notes if n.node == "added"),
            "edges_added": sum(1 for n in notes if getattr(n, "edge", "") == "added"),
            "write_s": round(outcome.report.write_s, 4),
            "failures": [{"task": k, "error": e} for k, e in failures],
        }
        typer.echo(json.dumps(out, ensure_ascii=False))
    else:
        import sys

        from fanout.progress import print_summary

        print_summary(m, sys.stdout)
        added = sum(1 for n in notes if n.node == "added")
        typer.echo(
            f"wrote {len(notes)} notes ({sum(1 for n in notes if n.note == 'created')} new, "
            f"{sum(1 for n in notes if n.note == 'updated')} updated), "
            f"{added} file nodes and edges added to {outcome.job.path.name}"
        )
        for n in notes[:50]:
            typer.echo(f"  {n.vault_path}  ({n.note})")
        for key, why in failures:
            typer.echo(f"failed {key}: {why}")
    if outcome.interrupted:
        typer.echo(f"run {outcome.run_id} interrupted; resume with: fanout resume {outcome.run_id}")
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_FAILED if failures else EXIT_OK)


@app.command("restore")
def restore_cmd(
    canvas: CanvasArg,
    backup: Annotated[
        Path | None, typer.Option(help="A backup to restore (default: the newest).")
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the backups instead.")] = False,
) -> None:
    """Put a backup of the canvas back (the current file is backed up first)."""
    from fanout.canvas import list_backups, restore

    try:
        if list_:
            for b in list_backups(canvas):
                typer.echo(str(b))
            return
        used = restore(canvas, backup)
    except FanoutError as exc:
        _err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    typer.echo(f"restored {canvas} from {used}")


def resume_canvas_cmd(
    run_id: str, reconfigure: bool, cache: bool, grace: float, progress: bool, as_json: bool
) -> None:
    """`fanout resume RUN` for a canvas run."""
    import json

    from fanout.canvas_run import RunOptions, resume_canvas

    opts = RunOptions(
        cache=cache,
        grace_s=grace,
        progress=progress,
        say=_err,
        on_start=lambda rid: typer.echo(
            f"run {rid} resumed (resume again with: fanout resume {rid})", err=True
        ),
    )
    try:
        outcome = asyncio.run(resume_canvas(run_id, reconfigure=reconfigure, opts=opts))
    except FanoutError as exc:
        _err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    _report(outcome, as_json, json)
