"""`fanout canvas plan | run | restore`: the Canvas learning workflow on the command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from fanout.cli.common import (
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
    from fanout.canvas.run import CanvasOutcome
    from fanout.canvas.workflow import CanvasJob
    from fanout.tasks import Task

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
    str | None,
    typer.Option(
        "--yellow",
        help="Colour of the learner's nodes: 3 (the spec's yellow, default) or another, e.g. 6.",
    ),
]
IdsOpt = Annotated[
    str | None, typer.Option(help="Target these node ids, whatever their colour (a,b).")
]
GroupOpt = Annotated[
    str | None,
    typer.Option(help="Target the text nodes inside this group (with --yellow: that colour's)."),
]
SamplesOpt = Annotated[int, typer.Option(help="Scoring samples per target (median, spread).")]
NOTES_SHOWN = 50


def _split(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command("plan", short_help="What a run would do: targets, context, tasks.")
def plan_cmd(
    canvas: CanvasArg,
    agents: AgentsOpt = None,
    smart: SmartOpt = None,
    yellow: YellowOpt = None,
    ids: IdsOpt = None,
    group: GroupOpt = None,
    samples: SamplesOpt = 1,
    config: ConfigOpt = None,
) -> None:
    """Show the targets, their context and the tasks a run would make; write nothing."""
    from fanout.canvas.io import check_canvas_path
    from fanout.canvas.run import CanvasChoice, plan
    from fanout.launch import load_agents

    with exits():
        choice = CanvasChoice(
            path=os.path.abspath(
                check_canvas_path(canvas)
            ),  # a symlink stays one: its vault is where it is
            agents=_split(agents),
            smart=smart,
            colour=yellow,
            ids=_split(ids),
            group=group,
            samples=samples,
        )
        job = plan(choice, load_agents(config))
    _show_plan(job)


def selection_lines(job: CanvasJob) -> list[str]:
    """How targets were chosen, the canvas's warnings and every skipped node with why: the
    same lines in `canvas plan` and in the summary of `canvas run` (in its JSON with --json)."""
    sel = job.selection
    lines = [
        f"targets: {len(sel.targets)} by {sel.how}"
        + (f", skipped {len(sel.skipped)}" if sel.skipped else "")
    ]
    if not sel.targets and sel.hint is not None:
        lines.append(f"hint: {sel.hint.message}")
    lines += [f"warning: {w}" for w in sel.warnings]
    lines += [f"skipped: {s}" for s in sel.skipped]
    return lines


def _show_plan(job: CanvasJob) -> None:
    sel = job.selection
    typer.echo(f"canvas: {job.path}")
    for line in selection_lines(job):
        typer.echo(line)
    mode = "smart: scoring first, then by verdict" if job.smart else "agents"
    typer.echo(f"{mode}: {', '.join(job.agents)}")
    by_target: dict[str, list[Task]] = {}
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


@app.command("run", short_help="Explain every target at once; write the notes back.")
def run_cmd(
    canvas: CanvasArg,
    agents: AgentsOpt = None,
    smart: SmartOpt = None,
    yellow: YellowOpt = None,
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
    restore_deleted: Annotated[
        bool,
        typer.Option(
            "--restore-deleted",
            help="Put back notes and edges you deleted from the canvas (default: left out).",
        ),
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
    seed: SeedOpt = 0,
    backend: BackendOpt = None,
    ray_address: RayAddressOpt = None,
    cache: CacheOpt = True,
    cache_ttl: CacheTtlOpt = None,
    grace: GraceOpt = 10.0,
    progress: ProgressOpt = True,
    json_summary: JsonOpt = False,
) -> None:
    """Explain every target with the chosen agents at once; write the results back.

    The run is kept in the run store: after a crash or Ctrl-C, `fanout resume RUN` goes on
    with it, and nothing that finished is sent again."""
    from fanout.canvas.aggregate import parse_mode
    from fanout.canvas.io import check_canvas_path
    from fanout.canvas.run import CanvasChoice, plan_run, start_canvas

    with exits():
        choice = CanvasChoice(
            path=os.path.abspath(
                check_canvas_path(canvas)
            ),  # a symlink stays one: its vault is where it is
            agents=_split(agents),
            smart=smart,
            colour=yellow,
            ids=_split(ids),
            group=group,
            samples=samples,
            mode=parse_mode(aggregate),
            recolour=recolour,
            notes_dir=notes_dir,
            node_colour=node_colour,
            restore_deleted=restore_deleted,
        )
        echoice = engine_choice(
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
            echoice,
            cache=cache,
            cache_ttl=cache_ttl,
            deadline=deadline,
            grace=grace,
            max_cost=max_cost,
            max_tokens=max_tokens,
        )
        planned = plan_run(choice, options)
        say_config_notes(planned.setup)
        done = follow(lambda: start_canvas(planned, options), progress=progress)
    report_canvas(done, json_summary)


def report_canvas(done: CanvasOutcome, as_json: bool) -> NoReturn:
    """Print a canvas run's summary; exit with a code that says how it went."""
    notes = done.report.notes
    if as_json:
        typer.echo(json.dumps(done.summary(), ensure_ascii=False))
    else:
        from fanout.cli.progress import print_summary

        print_summary(done.metrics, sys.stdout)
        # the lines `canvas plan` prints: how targets were chosen, warnings, skipped nodes
        for line in selection_lines(done.job):
            typer.echo(line)
        added = sum(1 for n in notes if n.node == "added")
        typer.echo(
            f"wrote {len(notes)} notes ({sum(1 for n in notes if n.note == 'created')} new, "
            f"{sum(1 for n in notes if n.note == 'updated')} updated), "
            f"{added} file nodes and edges added to {done.job.path.name}"
        )
        for n in notes[:NOTES_SHOWN]:
            typer.echo(f"  {n.vault_path}  ({n.note})")
        for key, why in done.failures:
            typer.echo(f"failed {key}: {why}")
        for s in done.report.not_written:
            typer.echo(f"not written {s}")
        deleted = done.report.left_deleted
        if deleted:
            typer.echo(
                f"{len(deleted)} notes you deleted from the canvas were left out "
                "(--restore-deleted brings them back)"
            )
    say_if_capped(done.run_id, done.metrics)
    if done.interrupted:
        err(f"run {done.run_id} interrupted; resume with: fanout resume {done.run_id}")
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_FAILED if done.failures or done.report.not_written else EXIT_OK)


@app.command("restore", short_help="Put a backup of the canvas back.")
def restore_cmd(
    canvas: CanvasArg,
    run: Annotated[
        str | None,
        typer.Option("--run", help="Undo this run (an id or a unique prefix of one)."),
    ] = None,
    backup: Annotated[
        Path | None, typer.Option(help="Put back this one backup file instead.")
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List the backups: time, run, file.")
    ] = False,
) -> None:
    """Undo the latest run on the canvas (all of its writes), or the run given; the
    current file is backed up first, so a restore can be undone too."""
    from fanout.canvas import list_backups, restore
    from fanout.canvas.safefile import backup_run, backup_time

    with exits():
        if list_:
            for b in list_backups(canvas):
                typer.echo(f"{backup_time(b)}  {backup_run(b) or '(no run)':<14}  {b}")
            return
        used = restore(canvas, backup, run_id=run)
    what = f"as before run {backup_run(used)}" if backup_run(used) else f"from {used}"
    typer.echo(f"restored {canvas} {what} ({used.name})")
