"""fanout.yaml: the shape, the defaults, environment overrides, and one clear message per
mistake (file, key path, bad value, what is allowed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fanout import Engine, ProviderLimits, RetryPolicy, SimConfig, SimProvider
from fanout.agents import builtin_blueprints
from fanout.config import DEFAULT_LANES, Config, ProviderSpec, load_config
from fanout.errors import ConfigError

EXAMPLE = """\
# fanout.yaml, in the shape of the seed notes' parallel_agents.yaml
default_provider: openai
concurrency: 8
providers:
  openai:
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
    model: gpt-4o-mini
    rpm: 500
    tpm: 200000
    concurrency: 32
  local:
    type: openai
    base_url: http://127.0.0.1:11434/v1
    model: qwen2.5
    adaptive: false
  claude-cli:
    type: command
    command: claude -p
    timeout: 300
  sim:
lanes:
  computation_intensive: 2
  io_intensive: 4
  lightweight: 6
agents:
  oral-explanation: {limit: 6, expected_s: 7}
  scoring-agent: {limit: 10, provider: local, timeout: 45}
  basic-decomposition: {limit: 8}
  deep-decomposition: {limit: 4, lane: io_intensive}
retry:
  attempts: 4
  backoff_base_s: 1
  backoff_cap_s: 20
  budget: 100
timeouts:
  attempt: 90
  idle: 20
  run: 3600
scheduling:
  order: longest_first
  aging_s: 30
"""
NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, text: str, name: str = "fanout.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, env=env or NO_ENV)
    prefix = f"{path}: "
    message = str(exc.value)
    assert message.startswith(prefix)
    return message[len(prefix) :]


def test_no_file_means_the_defaults(tmp_path: Path) -> None:
    cfg = load_config(env=NO_ENV, cwd=tmp_path)
    assert cfg == Config()
    assert cfg.source is None
    assert cfg.lanes == DEFAULT_LANES
    assert cfg.provider_specs() == {"sim": ProviderSpec(type="sim")}
    kw = cfg.engine_kwargs()
    assert kw["provider"] == "sim"
    assert "model" not in kw
    assert kw["concurrency"] == 16
    assert kw["timeout"] == 120.0
    assert kw["idle_timeout"] is None
    assert kw["retry"] == RetryPolicy()
    assert kw["limits"] == {}
    assert kw["agent_limits"] == {}
    assert kw["order"] == "fifo"
    assert cfg.submit_kwargs() == {}


def test_the_example_config(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    cfg = load_config(path, env=NO_ENV)
    assert cfg.source == path
    specs = cfg.provider_specs()
    assert list(specs) == ["openai", "local", "claude-cli", "sim"]
    assert specs["openai"].type == "openai"  # the type comes from the name
    assert specs["claude-cli"].command == "claude -p"
    assert specs["sim"] == ProviderSpec(type="sim")
    kw = cfg.engine_kwargs()
    assert kw == {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "concurrency": 8,
        "lanes": {"computation_intensive": 2, "io_intensive": 4, "lightweight": 6},
        "agent_lanes": {"deep-decomposition": "io_intensive"},
        "agent_limits": {
            "oral-explanation": 6,
            "scoring-agent": 10,
            "basic-decomposition": 8,
            "deep-decomposition": 4,
        },
        "limits": {
            "openai": ProviderLimits(rpm=500, tpm=200000, concurrency=32, adaptive=True),
            "local": ProviderLimits(adaptive=False),
        },
        "retry": RetryPolicy(attempts=4, backoff_base_s=1, backoff_cap_s=20, budget=100),
        "timeout": 90,
        "idle_timeout": 20,
        "aging_s": 30,
        "order": "longest_first",
        "expected_s": {"oral-explanation": 7},
    }
    assert cfg.submit_kwargs() == {"deadline_s": 3600}


def test_engine_kwargs_build_an_engine_that_runs_blueprint_tasks(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, EXAMPLE.replace("default_provider: openai", "")), env={})
    agents = cfg.apply_agents(builtin_blueprints())
    sims = {
        name: SimProvider(
            SimConfig(base_latency_s=0, min_output_tokens=1000, max_output_tokens=1000)
        )
        for name in cfg.provider_specs()
    }
    oral = agents["oral-explanation"]

    async def main() -> list[bool]:
        kw = cfg.engine_kwargs()
        kw["provider"] = "sim"
        async with Engine(**kw, providers=sims) as engine:
            run = await engine.run(
                [oral.task({"question": f"第{i}题：什么是逆否命题？"}) for i in range(4)],
                **cfg.submit_kwargs(),
            )
            return [r.ok for r in await run.results()]

    assert asyncio.run(main()) == [True] * 4


def test_agent_settings_override_blueprints(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, EXAMPLE), env=NO_ENV)
    agents = cfg.apply_agents(builtin_blueprints())
    scoring = agents["scoring-agent"]
    assert (scoring.provider, scoring.model, scoring.timeout) == ("local", "qwen2.5", 45)
    assert agents["deep-decomposition"].lane == "io_intensive"
    assert agents["oral-explanation"].lane == "computation_intensive"  # from the blueprint
    assert agents["memory-anchor"] is builtin_blueprints()["memory-anchor"] or (
        agents["memory-anchor"] == builtin_blueprints()["memory-anchor"]
    )
    stray = builtin_blueprints()["memory-anchor"].with_overrides(provider="gemini")
    with pytest.raises(ConfigError, match=r"provider: 'gemini' is not a configured provider"):
        cfg.apply_agents({"memory-anchor": stray})


def test_found_in_the_working_directory_or_named_by_fanout_config(tmp_path: Path) -> None:
    write(tmp_path, "concurrency: 3\n")
    assert load_config(env=NO_ENV, cwd=tmp_path).concurrency == 3
    other = write(tmp_path, "concurrency: 5\n", "other.yaml")
    assert load_config(env={"FANOUT_CONFIG": str(other)}, cwd=tmp_path).concurrency == 5
    assert load_config(other, env=NO_ENV, cwd=tmp_path).source == other
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=rf"^{missing}: no such config file$"):
        load_config(missing, env=NO_ENV)
    empty = load_config(write(tmp_path, "# nothing yet\n", "empty.yaml"), env=NO_ENV)
    assert empty.model_dump() == Config().model_dump()


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "FANOUT_CONCURRENCY": "32",
        "FANOUT_PROVIDER": "local",
        "FANOUT_TIMEOUT": "12.5",
        "FANOUT_ATTEMPTS": "5",
    }
    cfg = load_config(write(tmp_path, EXAMPLE), env=env)
    assert (cfg.concurrency, cfg.default_provider_name) == (32, "local")
    assert (cfg.timeouts.attempt, cfg.timeouts.idle, cfg.retry.attempts) == (12.5, 20, 5)
    assert load_config(env={"FANOUT_CONCURRENCY": "2"}, cwd=tmp_path / "x").concurrency == 2
    with pytest.raises(ConfigError, match=r"^FANOUT_CONCURRENCY='many': not a whole number$"):
        load_config(env={"FANOUT_CONCURRENCY": "many"}, cwd=tmp_path)
    assert error_of(tmp_path, EXAMPLE, {"FANOUT_CONCURRENCY": "0"}) == (
        "concurrency (set by FANOUT_CONCURRENCY): 0 is not allowed; it must be at least 1"
    )
    assert error_of(tmp_path, EXAMPLE, {"FANOUT_PROVIDER": "gemini"}) == (
        "default_provider (set by FANOUT_PROVIDER): 'gemini' is not a configured provider "
        "(configured: openai, local, claude-cli, sim)"
    )


def test_keys_come_from_the_environment_and_are_never_shown(tmp_path: Path) -> None:
    spec = load_config(write(tmp_path, EXAMPLE), env=NO_ENV).provider_specs()["openai"]
    assert spec.api_key({"OPENAI_API_KEY": "sk-test-123"}) == "sk-test-123"
    assert "sk-test" not in repr(spec)
    with pytest.raises(ConfigError) as exc:
        spec.api_key({})
    assert str(exc.value) == (
        "the environment variable OPENAI_API_KEY (api_key_env of this openai provider) is "
        "not set; export it with your API key"
    )
    assert ProviderSpec(type="sim").api_key({}) is None


@pytest.mark.parametrize(
    "key",
    [
        "sk-proj-Abc123def456ghi789jkl012",
        "sk-ant-api03-abcdefghijklmnopqrstu",
        "gsk_abcdefghijklmnopqrstuvwxyz",
        "3f9a0c1b7e2d4f6a8b0c2d4e6f8a0b1c",
        "AbCdEf/GhIjKl+MnOpQrStUv==",
    ],
)
def test_a_literal_key_in_the_config_is_refused_without_echoing_it(
    tmp_path: Path, key: str
) -> None:
    message = error_of(tmp_path, f"providers:\n  openai:\n    api_key_env: '{key}'\n")
    assert message == (
        f"providers.openai.api_key_env: this looks like an API key itself ({key[:3]}…, "
        f"{len(key)} characters); never write a key in the config: put it in an environment "
        "variable and give that variable's name, e.g. api_key_env: OPENAI_API_KEY"
    )
    assert key[3:] not in message


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "my_key_2", "DEEPSEEK_API_KEY_PRODUCTION"])
def test_variable_names_are_accepted(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"providers:\n  openai: {{api_key_env: {name}}}\n")
    assert load_config(path, env=NO_ENV).providers["openai"].api_key_env == name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lanes: [1, 2\n", "line 2, column 1: not valid YAML: expected ',' or ']', but got"),
        (
            "lanes:\n  io_intensive: 4\n  io_intensive: 5\n",
            "line 3, column 3: not valid YAML: the key 'io_intensive' appears twice (first on "
            "line 2)",
        ),
        (
            "- concurrency\n",
            "the file must be a mapping of keys (concurrency, providers, lanes, agents, ...), got "
            "a list",
        ),
        (
            "concurency: 8\n",
            "concurency: unknown key; allowed keys: concurrency, providers, default_provider, "
            "lanes, agents, retry, timeouts, scheduling",
        ),
        (
            "agents:\n  oral-explanation: {max_concurrent: 6}\n",
            "agents.oral-explanation.max_concurrent: unknown key; the seed notes' "
            "max_concurrent is `limit` here",
        ),
        (
            "providers:\n  openai: {api_key: abc}\n",
            "providers.openai.api_key: unknown key; keys are never written in the config; put "
            "the key in an environment variable and give that variable's name as `api_key_env`",
        ),
        (
            "retry: {attempts: 3, backoff: 2}\n",
            "retry.backoff: unknown key; allowed keys: attempts, backoff_base_s, backoff_cap_s, "
            "budget",
        ),
        ("lanes:\n  io_intensive: -1\n", "lanes.io_intensive: -1 is not allowed; it must be at "),
        ("lanes:\n  io_intensive: four\n", "lanes.io_intensive: 'four' is not a whole number"),
        ("concurrency: '8'\n", "concurrency: '8' is not a whole number"),
        ("concurrency: true\n", "concurrency: true is not a whole number"),
        ("timeouts: {attempt: 0}\n", "timeouts.attempt: 0 is not allowed; it must be greater "),
        ("providers:\n  openai: {rpm: -5}\n", "providers.openai.rpm: -5 is not allowed; it must"),
        ("providers:\n  openai: {adaptive: maybe}\n", "providers.openai.adaptive: 'maybe' is not"),
        ("lanes: 4\n", "lanes: expected a mapping of keys to values, got the value 4"),
        ("lanes: {1: 3}\n", "lanes: the key 1 must be text; write it in quotes"),
        ("agents:\n  x:\n", "agents.x: expected a mapping of keys to values, got an empty value"),
        (
            "providers:\n  x: {model: m}\n",
            "providers.x: `type` is required; one of: anthropic, command, openai, python, sim",
        ),
        (
            "providers:\n  x: {type: gemini}\n",
            "providers.x.type: 'gemini' is not a provider type; known: anthropic, command, "
            "openai, python, sim (a plugin adds one through the fanout.providers entry points)",
        ),
        (
            "providers:\n  claude: {type: command}\n",
            'providers.claude: type command needs `command`, e.g. command: "claude -p"',
        ),
        (
            "providers:\n  sim: {command: x}\n",
            "providers.sim: `command` is only for type command (this one is sim)",
        ),
        (
            "providers:\n  fn: {type: python, callable: answer}\n",
            "providers.fn.callable: 'answer' is not a reference like package.module:function",
        ),
        (
            "providers:\n  openai: {base_url: localhost:8080}\n",
            "providers.openai.base_url: 'localhost:8080' is not an http:// or https:// URL",
        ),
        (
            "providers:\n  'a:b': {type: sim}\n",
            "providers: 'a:b' is not a usable provider name (letters, digits, '.', '_' and '-')",
        ),
        (
            "default_provider: openai\n",
            "default_provider: 'openai' is not a configured provider (configured: sim)",
        ),
        (
            "agents:\n  memory-anchor: {lane: io_intense}\n",
            "agents.memory-anchor.lane: 'io_intense' is not a lane of this config (lanes: "
            "computation_intensive, io_intensive, lightweight); add it under `lanes` with a limit",
        ),
        (
            "agents:\n  memory-anchor: {provider: openai}\n",
            "agents.memory-anchor.provider: 'openai' is not a configured provider "
            "(configured: sim)",
        ),
        (
            "scheduling: {order: random}\n",
            "scheduling.order: 'random' is not allowed; use one of 'fifo' or 'longest_first'",
        ),
        (
            "concurrency: 8.5\nretry: {attempts: 0}\n",
            "2 problems:\n  concurrency: 8.5 is not a whole number\n  retry.attempts: 0 is not "
            "allowed; it must be at least 1",
        ),
    ],
)
def test_each_mistake_is_one_clear_message(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text).startswith(message)


def test_empty_sections_and_replaced_lanes(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "lanes:\nagents:\nproviders:\n  anthropic:\n"), env={})
    assert cfg.lanes == {}
    assert cfg.agents == {}
    assert cfg.provider_specs() == {"anthropic": ProviderSpec(type="anthropic")}
    cfg = load_config(write(tmp_path, "lanes: {fast: 9}\n"), env=NO_ENV)
    assert cfg.lanes == {"fast": 9}  # a lanes section replaces the seed notes' defaults


def test_a_plugin_provider_type_from_entry_points_is_configurable_and_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata
    import sys
    import types

    from fanout.providers import build_provider
    from fanout.providers.base import CallableProvider

    plugin = types.ModuleType("fanout_test_plugin")

    def from_spec(name: str, spec: object, *, concurrency: int, env: object = None) -> object:
        return CallableProvider(lambda req: "来自插件", name=name)

    plugin.from_spec = from_spec  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fanout_test_plugin", plugin)
    ep = importlib.metadata.EntryPoint(
        name="echo", value="fanout_test_plugin:from_spec", group="fanout.providers"
    )
    real = importlib.metadata.entry_points

    def fake(**kw: object) -> object:
        if kw.get("group") == "fanout.providers":
            return [ep]
        return real(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr("fanout.providers.registry.entry_points", fake)
    cfg_file = tmp_path / "fanout.yaml"
    cfg_file.write_text("providers:\n  mine: {type: echo}\n", encoding="utf-8")
    cfg = load_config(cfg_file)
    spec = cfg.provider_specs()["mine"]
    provider = build_provider("mine", spec, concurrency=4)
    assert provider.name == "mine"
    cfg_file.write_text("providers:\n  mine: {type: nosuch}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'nosuch' is not a provider type; known: .*echo"):
        load_config(cfg_file)


def test_prices_and_a_budget_come_from_the_config(tmp_path: Path) -> None:
    from fanout.engine.budget import DEFAULT_PRICES, Price

    text = (
        "budget: {max_cost: 2.5, max_tokens: 100000}\nprices:\n  my-model: {input: 1, output: 3}\n"
    )
    cfg = load_config(write(tmp_path, text), env=NO_ENV)
    assert (cfg.budget.max_cost, cfg.budget.max_tokens) == (2.5, 100000)
    prices = cfg.engine_kwargs()["prices"]
    assert prices["my-model"] == Price(1.0, 3.0)
    assert prices["gpt-4o"] == DEFAULT_PRICES["gpt-4o"]  # the shipped table stays beneath
    assert error_of(tmp_path, "budget: {max_cost: 0}\n").startswith(
        "budget.max_cost: 0 is not allowed"
    )
