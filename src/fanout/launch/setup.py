"""From a config file and command-line choices to what the engine needs.

One place, used by every front end, so they hold no logic the library lacks: which
provider to build, its limits, the blueprints with the config's agent settings applied, and
the one line that says the simulator is answering.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from fanout.config import MAX_CONCURRENCY, Config, EngineKwargs, load_config
from fanout.engine.limits import ProviderLimits
from fanout.engine.retry import RetryPolicy
from fanout.engine.settings import DEFAULT_CONCURRENCY
from fanout.engine.shared import FILE_NAME as ACCOUNTS_FILE
from fanout.engine.shared import SharedAccount, account_id
from fanout.errors import ConfigError
from fanout.paths import data_dir

if TYPE_CHECKING:
    from fanout.agents import Blueprint
    from fanout.engine.backend import Backend
    from fanout.providers.base import Provider
    from fanout.providers.spec import ProviderSpec

DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
#: providers whose budgets belong to an account at a service, shared by the runs on a machine
SHARED_TYPES = ("openai", "anthropic")
SIM_NOTE = "no provider configured: using the built-in simulator (sim); see --provider"


@dataclass(slots=True, kw_only=True)
class EngineChoice:
    """What the user chose for the engine; None means "as configured" (or, on resume, "as
    the run was started")."""

    config: Path | None = None
    provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    command: str | None = None
    rpm: float | None = None
    tpm: float | None = None
    concurrency: int | None = None
    timeout: float | None = None
    attempts: int | None = None
    sim_latency: str | None = None
    sim_faults: str | None = None
    seed: int | None = None
    backend: str | None = None  # "local" (None) or "ray"
    ray_address: str | None = None  # with backend "ray": "auto" (None) or the head's host:port

    def updated(self, changes: EngineChoice) -> EngineChoice:
        """This choice with every field `changes` sets (not None) replaced."""
        given = {
            f.name: getattr(changes, f.name)
            for f in dataclasses.fields(changes)
            if getattr(changes, f.name) is not None
        }
        return dataclasses.replace(self, **given)


@dataclass(slots=True)
class Setup:
    """What an engine is built from: its settings, its provider, the blueprints."""

    engine: EngineKwargs
    providers: dict[str, Provider]
    blueprints: dict[str, Blueprint]
    deadline_s: float | None = None  # the config's whole-run deadline
    max_cost_usd: float | None = None  # the config's caps (`budget:`)
    max_tokens: int | None = None
    seed: int = 0
    note: str | None = None
    provider_name: str = "sim"
    config: Config | None = field(default=None, repr=False)
    backend: Backend | None = None  # where provider calls run (None: in this process)


def load_agents(config_path: Path | None = None) -> dict[str, Blueprint]:
    """Blueprints (package, user dir, project dir) with the config's agent settings; no
    provider is built, so no key is needed."""
    from fanout.agents import load_blueprints

    return load_config(config_path).apply_agents(load_blueprints())


def engine_setup(choice: EngineChoice, config: Config | None = None) -> Setup:
    """The engine's settings and provider for `choice` (with `config` in place of reading
    `choice.config`, for a caller that holds one already). Raises `ConfigError` for anything
    that cannot be used, naming it: an unknown provider, a missing key, a bad value."""
    from fanout.agents import load_blueprints
    from fanout.providers import build_provider, provider_types

    cfg = load_config(choice.config) if config is None else config
    specs = cfg.provider_specs()
    configured = bool(cfg.providers)
    name = choice.provider or cfg.default_provider_name
    if name in specs and not (choice.base_url or choice.command):
        spec = specs[name]
    elif name in provider_types():
        spec = _spec_from_flags(name, choice)
    else:
        known = sorted(set(specs) | set(provider_types()))
        raise ConfigError(f"--provider {name!r} is not configured; use one of: {', '.join(known)}")
    if (choice.sim_latency or choice.sim_faults) and spec.type != "sim":
        raise ConfigError("--sim-latency and --sim-faults are for the simulator (--provider sim)")
    seed = choice.seed or 0
    if spec.type == "sim":
        spec = _sim_spec(spec, choice, seed)
    for flag, value in (("--rpm", choice.rpm), ("--tpm", choice.tpm)):
        if value is not None and value <= 0:
            raise ConfigError(f"{flag} {value}: must be positive")
    if choice.timeout is not None and choice.timeout <= 0:
        raise ConfigError(f"--timeout {choice.timeout}: must be positive")
    if choice.concurrency is not None and choice.concurrency < 1:
        raise ConfigError(f"--concurrency {choice.concurrency}: must be at least 1")
    if choice.concurrency is not None and choice.concurrency > MAX_CONCURRENCY:
        raise ConfigError(
            f"--concurrency {choice.concurrency}: at most {MAX_CONCURRENCY:,} calls at once"
        )
    if choice.attempts is not None and choice.attempts < 1:
        raise ConfigError(f"--attempts {choice.attempts}: must be at least 1")

    backend = _backend(choice, name, spec, cfg)
    kw = cfg.engine_kwargs()
    concurrency = choice.concurrency or (
        cfg.concurrency if cfg.source is not None else DEFAULT_CONCURRENCY
    )
    kw["concurrency"] = concurrency
    kw["provider"] = name
    model = choice.model or spec.model
    if model:
        kw["model"] = model
    if choice.timeout is not None:
        kw["timeout"] = choice.timeout
    if choice.attempts is not None:
        kw["retry"] = dataclasses.replace(
            kw.get("retry") or RetryPolicy(), attempts=choice.attempts
        )
    limits = dict(kw.get("limits") or {})
    if choice.rpm is not None or choice.tpm is not None:
        base = limits.get(name) or ProviderLimits()
        limits[name] = dataclasses.replace(
            base,
            rpm=choice.rpm if choice.rpm is not None else base.rpm,
            tpm=choice.tpm if choice.tpm is not None else base.tpm,
        )
    if spec.type in SHARED_TYPES:  # one account's budget, shared with the other runs here
        base = limits.get(name) or ProviderLimits()
        account = account_id(spec.type, spec.base_url, spec.api_key())
        shared = SharedAccount(data_dir() / ACCOUNTS_FILE, account)
        limits[name] = dataclasses.replace(base, account=shared)
    kw["limits"] = limits
    note = SIM_NOTE if spec.type == "sim" and choice.provider is None and not configured else None
    try:
        provider = build_provider(name, spec, concurrency=concurrency)
    except ConfigError as exc:
        if cfg.source is None or name not in cfg.providers:
            raise
        raise ConfigError(f"{cfg.source}: {exc.message}") from None  # say which file
    return Setup(
        engine=kw,
        providers={name: provider},
        blueprints=cfg.apply_agents(load_blueprints()),
        deadline_s=cfg.timeouts.run,
        max_cost_usd=cfg.budget.max_cost,
        max_tokens=cfg.budget.max_tokens,
        seed=seed,
        note=note,
        provider_name=name,
        config=cfg,
        backend=backend,
    )


BACKENDS = ("local", "ray")


def _backend(choice: EngineChoice, name: str, spec: ProviderSpec, cfg: Config) -> Backend | None:
    """The backend `choice` names (else fanout.yaml's `backend:` / `ray_address:`); made
    here but not connected (the engine's start does that, so a cluster that does not
    answer is an error before anything runs)."""
    kind = choice.backend or cfg.backend or "local"
    if kind not in BACKENDS:
        raise ConfigError(f"--backend {kind!r}: use one of: {', '.join(BACKENDS)}")
    if kind == "local":
        if choice.ray_address is not None:
            raise ConfigError("--ray-address is for --backend ray")
        if cfg.ray_address is not None and choice.backend is None:
            raise ConfigError(
                f"{cfg.source or 'fanout.yaml'}: ray_address is for backend: ray; add "
                "`backend: ray`, or remove ray_address"
            )
        return None
    from fanout.backends.ray import INSTALL_HINT, RayBackend, ray_installed

    if not ray_installed():
        raise ConfigError(f"--backend ray: Ray is not installed; {INSTALL_HINT}")
    if choice.ray_address is not None:
        address, said = choice.ray_address, "--ray-address"
    elif cfg.ray_address is not None:
        address, said = cfg.ray_address, f"{cfg.source or 'fanout.yaml'}: ray_address:"
    else:
        address, said = "auto", "--backend ray, address"
    return RayBackend(address, specs={name: spec}, address_from=said)


def _spec_from_flags(kind: str, choice: EngineChoice) -> ProviderSpec:
    """A provider named by type on the command line (--provider openai --base-url ...)."""
    from fanout.providers.spec import ProviderSpec

    if choice.base_url is not None and kind not in ("openai", "anthropic"):
        raise ConfigError(f"--base-url is for --provider openai or anthropic, not {kind}")
    if kind == "python":
        raise ConfigError(
            "--provider python needs a function to call: name it in fanout.yaml, e.g. "
            "providers: {mine: {type: python, callable: mypkg.agents:answer}}, then "
            "--provider mine"
        )
    if kind == "command":
        if not choice.command:
            raise ConfigError('--provider command needs --command, e.g. --command "claude -p"')
        return ProviderSpec(type="command", command=choice.command)
    if choice.command is not None:
        raise ConfigError("--command is for --provider command")
    key_env = DEFAULT_KEY_ENV.get(kind)
    if key_env is not None and not os.environ.get(key_env):
        if choice.base_url is None:
            raise ConfigError(
                f"--provider {kind} needs an API key in the environment variable {key_env}; "
                "set it, or give --base-url for a local server, or leave out --provider to "
                "use the built-in simulator"
            )
        key_env = None  # a local server without a key
    try:
        return ProviderSpec(type=kind, base_url=choice.base_url, api_key_env=key_env)
    except ValidationError as exc:
        raise ConfigError(f"--provider {kind}: {_flag_problem(exc)}") from None


def _flag_problem(exc: ValidationError) -> str:
    """The first problem of a spec built from flags, in the flags' words (never pydantic's
    own text, which links to its web site)."""
    first = exc.errors(include_url=False)[0]
    loc = first.get("loc") or ()
    ctx = first.get("ctx") or {}
    what = str(ctx.get("error") or first.get("msg", "not allowed"))
    flag = {"base_url": "--base-url", "command": "--command"}.get(str(loc[0]) if loc else "")
    return f"{flag} {what}" if flag else what


def _sim_spec(spec: ProviderSpec, choice: EngineChoice, seed: int) -> ProviderSpec:
    from fanout.providers.sim import parse_faults, parse_latency

    opts = dict(spec.options)
    opts.setdefault("seed", seed)
    try:
        if choice.sim_latency:
            opts.update(parse_latency(choice.sim_latency))
        if choice.sim_faults:
            opts["faults"] = parse_faults(choice.sim_faults)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return spec.model_copy(update={"options": opts})
