"""The seed notes' `config/parallel_agents.yaml` loads: each key mapped to its fanout
meaning, the ones with no meaning here reported once as warnings (`fanout batch --config`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fanout.config import load_config
from fanout.errors import ConfigError

ROOT = Path(__file__).parent.parent
SEED_YAML = ROOT / "tests" / "fixtures" / "seed" / "parallel_agents.yaml"
SEED_NOTE = ROOT.parent / "shared" / "seeds" / "002_8ea85fe289f2fb0b.txt"


def test_fixture_is_the_seed_notes_block_unchanged() -> None:
    if not SEED_NOTE.exists():
        pytest.skip("the seed notes are not beside this checkout")
    note = SEED_NOTE.read_text(encoding="utf-8")
    block = note.split("**并行处理配置**:\n```yaml\n", 1)[1].split("```", 1)[0]
    assert SEED_YAML.read_text(encoding="utf-8") == block


def test_seed_keys_map_to_fanout_settings() -> None:
    cfg = load_config(SEED_YAML, env={})
    assert cfg.concurrency == 8  # default_max_concurrent
    assert cfg.lanes == {}  # the file names none: its own limits are the ones meant
    limits = {a: s.limit for a, s in cfg.agents.items()}
    assert limits == {
        "basic-decomposition": 8,
        "oral-explanation": 6,
        "scoring-agent": 10,
        "deep-decomposition": 4,
    }
    assert {a: s.timeout for a, s in cfg.agents.items()} == {
        "basic-decomposition": 60,
        "oral-explanation": 90,
        "scoring-agent": 30,
        "deep-decomposition": 120,
    }
    # retry_attempts counts retries; fanout's attempts count the first one too
    assert {a: s.attempts for a, s in cfg.agents.items()} == {
        "basic-decomposition": 4,
        "oral-explanation": 3,
        "scoring-agent": 4,
        "deep-decomposition": 3,
    }
    assert cfg.retry.attempts == 4  # task_queue.task_retry_attempts: 3
    assert cfg.retry.backoff_base_s == 5  # task_retry_delay_seconds
    assert cfg.timeouts.attempt == 120  # process_pool.task_timeout_seconds
    kw = cfg.engine_kwargs()
    assert kw["slow_after_s"] == 60  # alert_on_slow_execution + threshold
    assert kw["agent_limits"]["oral-explanation"] == 6
    seed = cfg.seed_settings
    assert seed is not None
    assert (seed.max_concurrent_limit, seed.min_concurrent, seed.max_queue_size) == (10, 1, 1000)
    assert seed.priority_levels == ("urgent", "high", "normal", "low")
    assert seed.continue_on_error
    assert seed.error_notification
    assert seed.log_performance_data
    # the blueprints get the agents' settings
    bp = cfg.apply_agents(_blueprints())
    assert bp["oral-explanation"].timeout == 90
    assert bp["oral-explanation"].attempts == 3


def _blueprints() -> dict[str, object]:
    from fanout.agents import load_blueprints

    return dict(load_blueprints())


def test_ignored_keys_are_named_with_why() -> None:
    notes = load_config(SEED_YAML, env={}).notes
    assert len(notes) == 3
    processes, context, fallback = notes
    for key in ("process_pool", "worker_processes", "aiomultiprocess_settings"):
        assert key in processes
    assert "asyncio" in processes
    assert "task_timeout_seconds" not in processes  # that one is used
    assert "context_isolation" in context
    assert "context_size_mb" in context
    assert "deep-decomposition" in context
    assert "'retry|skip|fail'" in fallback
    assert "read as 'retry'" in fallback


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("  default_max_concurrent: 8\n", "  default_max_concurrent: 20\n"),
        ("      max_concurrent: 6\n", "      max_concurent: 6\n"),
        ('  fallback_strategy: "retry|skip|fail"', '  fallback_strategy: "explode"'),
        ('    queue_type: "priority"', '    queue_type: "random"'),
    ],
)
def test_bad_seed_values_are_refused_naming_the_key(tmp_path: Path, old: str, new: str) -> None:
    text = SEED_YAML.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "并行配置.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    msg = info.value.message
    assert msg.startswith(str(path))
    assert "\n" not in msg or "problems" in msg
    expected = {
        "default_max_concurrent: 20": "default_max_concurrent 20 is outside",
        "max_concurent": "max_concurent: unknown key; allowed keys: max_concurrent",
        '"explode"': "'explode' is not one of retry, skip, fail",
        '"random"': "queue_type: 'random' is not allowed",
    }
    want = next(v for k, v in expected.items() if k in new)
    assert want in msg


def test_a_setting_given_both_ways_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "both.yaml"
    path.write_text(SEED_YAML.read_text(encoding="utf-8") + "concurrency: 4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="concurrency and parallel_processing"):
        load_config(path, env={})
    # a fanout.yaml key the seed file does not set goes along
    path.write_text(
        SEED_YAML.read_text(encoding="utf-8") + "scheduling: {order: longest_first}\n",
        encoding="utf-8",
    )
    assert load_config(path, env={}).scheduling.order == "longest_first"


@pytest.mark.e2e
def test_cli_batch_with_the_seed_yaml_prints_the_ignored_keys_once(tmp_path: Path) -> None:
    config = tmp_path / "config" / "parallel_agents.yaml"
    config.parent.mkdir()
    shutil.copyfile(SEED_YAML, config)
    jobs = tmp_path / "任务.jsonl"
    lines = [{"id": f"q{i}", "prompt": f"什么是逆否命题？{i}"} for i in range(3)]
    jobs.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), "utf-8")
    out = tmp_path / "结果.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "fanout", "batch", str(jobs), "-o", str(out),
         "--config", str(config), "--sim-latency", "1ms", "--no-progress"],
        capture_output=True, text=True, encoding="utf-8", cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("fanout: warning:")]
    assert len(warnings) == 3
    for key in ("process_pool", "aiomultiprocess_settings", "context_isolation"):
        assert sum(key in ln for ln in proc.stderr.splitlines()) == 1
    assert all(str(config) in ln for ln in warnings)
    assert "unknown key" not in proc.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
    assert re.search(r"run r-\w+", proc.stderr)


def test_each_seed_switch_has_its_meaning() -> None:
    """The keys the seed file sets one way, set the other way (a file a user changed)."""
    from fanout.config import config_from

    cfg = config_from(
        {
            "parallel_processing": {
                "enabled": False,
                "task_queue": {"queue_type": "fifo", "task_retry_delay_seconds": 60},
                "error_handling": {"fallback_strategy": "fail", "error_isolation": False},
                "performance_monitoring": {"collect_metrics": False},
            },
            "lanes": {"lightweight": 3},
        },
        env={},
    )
    assert cfg.concurrency == 1  # enabled: false
    assert cfg.lanes == {"lightweight": 3}  # lanes written beside the sections are kept
    assert cfg.retry.backoff_base_s == 60
    assert cfg.retry.backoff_cap_s == 60  # the default cap would cut the asked delay
    seed = cfg.seed_settings
    assert seed is not None
    assert not seed.use_priorities  # fifo
    assert not seed.continue_on_error  # fallback_strategy: fail
    assert seed.slow_after_s is None  # no alert asked for
    assert "slow_after_s" not in cfg.engine_kwargs()
    notes = "\n".join(cfg.notes)
    assert "error_isolation false" in notes
    assert "collect_metrics false" in notes
    lifo = config_from({"parallel_processing": {"task_queue": {"queue_type": "lifo"}}}, env={})
    assert "queue_type lifo" in lifo.notes[0]
    assert lifo.seed_settings is not None
    assert lifo.seed_settings.use_priorities


def test_a_bad_mapped_value_is_named_by_the_seed_key_that_set_it() -> None:
    from fanout.config import config_from

    with pytest.raises(ConfigError) as info:
        config_from({"parallel_processing": {"default_max_concurrent": 10**9}}, env={})
    assert "concurrency (set by parallel_processing.default_max_concurrent)" in info.value.message
