"""What every command shares: exit codes, the one error printer, the option definitions.

Exit codes: 0 every task done; 1 some task failed (or the run was cancelled); 2 bad input
or configuration (nothing was run and nothing written); 130 interrupted (the run is kept,
resumable with `fanout resume RUN`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fanout.errors import FanoutError

if TYPE_CHECKING:
    from fanout.launch import EngineChoice, Overrides, RunOptions, Setup

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def err(message: str) -> None:
    """One line on stderr, as every message of the command is printed."""
    typer.echo(f"fanout: {message}", err=True)


@contextlib.contextmanager
def exits() -> Iterator[None]:
    """Map what the library raises to one line and an exit code: a `FanoutError` is bad
    input or configuration (2), Ctrl-C that got through is 130. Every command runs in it."""
    try:
        yield
    except FanoutError as exc:
        err(exc.message)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        err("interrupted (the run is kept: see fanout runs)")
        raise typer.Exit(EXIT_INTERRUPTED) from None


# -- options shared by `batch`, `canvas run` and `resume` ------------------------------------

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="fanout.yaml to use (default: ./fanout.yaml if present)."),
]
ProviderOpt = Annotated[
    str | None,
    typer.Option(help="Provider: a name from fanout.yaml, or sim, openai, anthropic, command."),
]
ModelOpt = Annotated[str | None, typer.Option(help="Model for tasks that name none.")]
BaseUrlOpt = Annotated[
    str | None, typer.Option(help="Base URL of an OpenAI-compatible or Anthropic server.")
]
CommandOpt = Annotated[
    str | None, typer.Option(help='Command for --provider command, e.g. "claude -p".')
]
ConcurrencyOpt = Annotated[
    int | None, typer.Option(help="Calls in flight at once (default 16).", min=1)
]
RpmOpt = Annotated[float | None, typer.Option(help="Requests per minute budget.")]
TpmOpt = Annotated[float | None, typer.Option(help="Tokens per minute budget.")]
TimeoutOpt = Annotated[float | None, typer.Option(help="Seconds per attempt.")]
AttemptsOpt = Annotated[int | None, typer.Option(help="Attempts per task (1 = no retry).", min=1)]
DeadlineOpt = Annotated[
    float | None, typer.Option(help="Seconds for the whole run; the rest is cancelled.")
]
SimLatencyOpt = Annotated[
    str | None,
    typer.Option(help="Simulator latency, e.g. 50ms or base=50ms,per_token=1ms,jitter=0.2."),
]
SimFaultsOpt = Annotated[
    str | None, typer.Option(help="Simulator faults, e.g. 429=0.05,500=0.02,timeout=0.01.")
]
BackendOpt = Annotated[
    str | None,
    typer.Option(help="Where provider calls run: local (this process) or ray (a Ray cluster)."),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(help="With --backend ray: the cluster's head, host:port, or auto (default)."),
]
SeedOpt = Annotated[int | None, typer.Option(help="Seed for the simulator and retry jitter.")]
CacheOpt = Annotated[
    bool | None,
    typer.Option("--cache/--no-cache", help="Use the result cache (answers kept by request)."),
]
CacheTtlOpt = Annotated[
    str | None,
    typer.Option(help="Cached answers older than this are not used, e.g. 3600, 12h, 7d."),
]
MaxCostOpt = Annotated[
    float | None,
    typer.Option(
        "--max-cost",
        help="Dollars the run may spend at most (model prices: fanout.yaml `prices:`); "
        "reached, it stops, resumable with a higher cap.",
    ),
]
MaxTokensOpt = Annotated[
    int | None, typer.Option("--max-tokens", help="Tokens the run may use at most.", min=1)
]
GraceOpt = Annotated[
    float | None,
    typer.Option(help="Seconds calls in flight may take to finish after a first Ctrl-C.", min=0),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")]
ProgressOpt = Annotated[bool, typer.Option(help="Live progress on stderr (only on a terminal).")]
RunArg = Annotated[str, typer.Argument(help="The run id (or a unique prefix of it).")]


def engine_choice(
    *,
    config: Path | None,
    provider: str | None,
    model: str | None,
    base_url: str | None,
    command: str | None,
    concurrency: int | None,
    rpm: float | None,
    tpm: float | None,
    timeout: float | None,
    attempts: int | None,
    sim_latency: str | None,
    sim_faults: str | None,
    seed: int | None,
    backend: str | None = None,
    ray_address: str | None = None,
) -> EngineChoice:
    from fanout.launch import EngineChoice

    return EngineChoice(
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


def run_options(
    choice: EngineChoice,
    *,
    cache: bool | None,
    cache_ttl: str | None,
    deadline: float | None,
    grace: float | None,
    max_cost: float | None = None,
    max_tokens: int | None = None,
) -> RunOptions:
    """The options of a new run from its flags (unset: the defaults)."""
    from fanout.launch import RunOptions

    given = overrides(
        choice,
        cache=cache,
        cache_ttl=cache_ttl,
        deadline=deadline,
        grace=grace,
        max_cost=max_cost,
        max_tokens=max_tokens,
    )
    return RunOptions(choice=choice).updated(given)


def overrides(
    choice: EngineChoice,
    *,
    cache: bool | None,
    cache_ttl: str | None,
    deadline: float | None,
    grace: float | None,
    max_cost: float | None = None,
    max_tokens: int | None = None,
) -> Overrides:
    """What the flags given to `fanout resume` change (unset: as the run was started)."""
    from fanout.launch import Overrides, parse_duration

    return Overrides(
        choice=choice,
        cache=cache,
        cache_ttl_s=parse_duration("--cache-ttl", cache_ttl),
        deadline_s=deadline,
        grace_s=grace,
        max_cost_usd=max_cost,
        max_tokens=max_tokens,
    )


def say_config_notes(setup: Setup) -> None:
    """The config file's keys that mean nothing here (the seed notes' parallel_agents.yaml
    has some), each group once, as a warning line: they never stop a run."""
    config = setup.config
    if config is None:
        return
    for note in config.notes:
        err(f"warning: {config.source}: {note}")


def say_if_capped(run_id: str, metrics: Mapping[str, Any]) -> None:
    """One line when the run stopped at its cost or token cap, with how to go on."""
    if metrics.get("status") != "budget_exhausted":
        return
    cap = metrics.get("max_cost_usd")
    spent = f"${metrics.get('cost_usd', 0):.4f}" + (f" of ${cap:g}" if cap is not None else "")
    flag = "--max-cost" if cap is not None else "--max-tokens"
    err(
        f"run {run_id} stopped at its cap ({spent} spent, {metrics.get('done', 0)} done); go on "
        f"with a higher cap: fanout resume {run_id} {flag} N"
    )
