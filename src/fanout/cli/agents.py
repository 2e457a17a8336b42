"""`fanout agents list | show`: the agent blueprints that can be used here."""

from __future__ import annotations

from typing import Annotated

import typer

from fanout.cli.common import EXIT_BAD_INPUT, ConfigOpt, err, exits

app = typer.Typer(help="The agent blueprints: built in, yours, this project's.")


@app.command("list", short_help="Every agent blueprint usable here, and its source.")
def agents_list(config: ConfigOpt = None) -> None:
    """Every agent blueprint that can be used here, and where it comes from."""
    from fanout.launch import load_agents

    with exits():
        bps = load_agents(config)
    width = max((len(n) for n in bps), default=10)
    for name, bp in sorted(bps.items()):
        where = bp.origin if bp.source is None else f"{bp.origin}: {bp.source}"
        typer.echo(f"{name:<{width}}  {bp.output:<8}  {bp.lane or '-':<21}  {where}")
        if bp.description:
            typer.echo(f"{'':<{width}}  {bp.description}")


@app.command("show")
def agents_show(
    name: Annotated[str, typer.Argument(help="The agent's name.")], config: ConfigOpt = None
) -> None:
    """One blueprint: its settings, inputs and prompt."""
    from fanout.launch import load_agents

    with exits():
        bps = load_agents(config)
    bp = bps.get(name)
    if bp is None:
        err(f"unknown agent {name!r}; known agents: {', '.join(sorted(bps))}")
        raise typer.Exit(EXIT_BAD_INPUT)
    typer.echo(bp.describe())
