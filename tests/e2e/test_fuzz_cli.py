"""Generated JSONL files and fanout.yaml configs fed to `fanout batch`, each run as its own
process (issue 11): whatever the input, the exit code is 0, 1 or 2, nothing hangs, no
traceback is printed, an exit 2 writes nothing (a file is refused whole only when it cannot
be read, --strict finds a bad line, or every line is bad), and otherwise every non-blank line
has its output line, every well-formed request among them answered.

The inputs are generated from a seed (FANOUT_FUZZ_SEED, default fixed; FANOUT_FUZZ_SCALE
multiplies the number of cases) out of what broke the CLI before: deep nesting, huge
integers, lone surrogates, line separators inside strings, wrong types in every field,
alias bombs, bad provider options, quotes, control characters, Chinese text.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli_batch import ROOT

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("FANOUT_FUZZ_SEED", "20261130"))
SCALE = float(os.environ.get("FANOUT_FUZZ_SCALE", "1"))
JSONL_FILES = int(40 * SCALE)  # of about 6 lines each: some 250 generated lines
CONFIGS = int(150 * SCALE)
DRIVER = Path(__file__).with_name("clidriver.py")

TEXTS = [
    "解释离散数学中的等价关系",
    "x\u2028y\u2029z\u0085w",  # line separators JSON strings may hold
    "tab\tnew\nline\r\n",
    "\x0b\x0c\x1c\x1d\x1e",
    "emoji 😀 and \\ud83d\\ude00",
    'quote " and backslash \\\\',
    "   ",
    "",
    "a" * 3000,
    "零\u200b宽",
    "\u0000nul",
]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(TEXTS) for _ in range(rng.randint(1, 3)))


def _deep(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


def _good(rng: random.Random, i: int) -> tuple[str, bool]:
    cid = f"q{i}-{rng.choice(['问', 'a', 'é', '1'])}"
    if rng.random() < 0.3:
        body = {"messages": [{"role": "user", "content": f"问题 {i} {rng.choice(TEXTS)}x"}]}
        obj: dict[str, Any] = {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions"}
        obj["body"] = body
    else:
        obj = {"id": cid, "prompt": f"第{i}题 {rng.choice(TEXTS)}x"}
        if rng.random() < 0.3:
            obj["priority"] = rng.choice(["urgent", "high", "normal", "low"])
        if rng.random() < 0.2:
            obj["max_tokens"] = rng.randint(3000, 8000)  # room for any simulated answer
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5), True


def _bad(rng: random.Random, i: int) -> str:
    cid = json.dumps(f"b{i}")
    choices = [
        lambda: '{"id":' + cid + ',"prompt":' + _deep(rng.randint(90, 1500)) + "}",
        lambda: (
            '{"id":' + cid + ',"prompt":"x","x":' + _deep(rng.randint(90, 1200), "{", "}") + "}"
        ),
        lambda: (
            '{"id":' + cid + ',"prompt":"x","max_tokens":' + "9" * rng.randint(4290, 6000) + "}"
        ),
        lambda: '{"id":' + cid + ',"prompt":"hi \\ud800 there"}',
        lambda: '{"id":"\\udfff","prompt":"x"}',
        lambda: '{"id":' + cid + ',"prompt":"x"',
        lambda: "[1, 2, 3]",
        lambda: '"just a string"',
        lambda: "NaN",
        lambda: '{"id":' + cid + ',"prompt":NaN}',
        lambda: '{"id":' + cid + ',"prompt":"x","max_tokens":Infinity}',
        lambda: '{"id":' + cid + ',"prompt":"x","max_tokens":-Infinity}',
        lambda: '{"id":' + cid + ',"prompt":"x","max_tokens":1e400}',
        lambda: (
            '{"id":'
            + cid
            + ',"prompt":"x","max_tokens":'
            + rng.choice(["-1", "0", "1.5", "true", '"9"', "99999999999999999999999"])
            + "}"
        ),
        lambda: (
            '{"id":'
            + cid
            + ',"prompt":'
            + rng.choice(["1", "null", "[]", "{}", '""', "true"])
            + "}"
        ),
        lambda: '{"id":' + rng.choice(["1", "null", "[]", "{}", "true", '""']) + ',"prompt":"x"}',
        lambda: (
            '{"id":'
            + cid
            + ',"prompt":"x","priority":'
            + rng.choice(['"soon"', "5", "null", "[]"])
            + "}"
        ),
        lambda: (
            '{"id":'
            + cid
            + ',"prompt":"x","depends_on":'
            + rng.choice(['"nobody"', "[1]", '["q0-a","q0-a"]', "{}"])
            + "}"
        ),
        lambda: (
            '{"id":'
            + cid
            + ',"messages":'
            + rng.choice(["[]", "[1]", '[{"role":"user"}]', '"hi"', "null"])
            + "}"
        ),
        lambda: '{"custom_id":' + cid + ',"method":"GET","url":"/v1/chat/completions","body":{}}',
        lambda: (
            '{"custom_id":'
            + cid
            + ',"url":"/v1/embeddings","body":{"messages":[{"role":"user","content":"x"}]}}'
        ),
        lambda: (
            '{"custom_id":'
            + cid
            + ',"body":{"messages":[{"role":"user","content":"x"}],"max_tokens":'
            + rng.choice(["0", '"5"', "1e9", "-3"])
            + "}}"
        ),
        lambda: (
            '{"id":'
            + cid
            + ',"prompt":"x","lane":'
            + rng.choice(['""', "1", '"nonexistent-lane"'])
            + "}"
        ),
        lambda: '{"id":' + cid + ',"agent":"no-such-agent","inputs":{"question":"q"}}',
        lambda: (
            '{"id":'
            + cid
            + ',"agent":"oral-explanation","inputs":'
            + rng.choice(['{"question":"q"}', "[]", '{"question":' + _deep(50) + "}"])
            + "}"
        ),
        lambda: '{"id":' + cid + ',"prompt":"x","' + "k" * rng.randint(1, 500) + '":1}',
        lambda: "{" * rng.randint(1, 3000),
        lambda: "\ufeff" + '{"id":' + cid + ',"prompt":"bom"}',
        lambda: '{"id":' + cid + ',"prompt":"dup"}\n{"id":' + cid + ',"prompt":"dup"}',
    ]
    return rng.choice(choices)()


def jsonl_case(rng: random.Random, k: int) -> tuple[bytes, set[str]]:
    """A file's bytes and the ids of its well-formed requests (each must come back done)."""
    lines: list[str] = []
    good: set[str] = set()
    for i in range(rng.randint(1, 12)):
        n = k * 100 + i
        r = rng.random()
        if r < 0.55:
            line, _ = _good(rng, n)
            obj = json.loads(line)
            good.add(obj.get("custom_id", obj.get("id")))
        elif r < 0.62:
            line = rng.choice(["", "   ", "\t", "\u3000"])
        else:
            line = _bad(rng, n)
        lines.append(line)
    ending = rng.choice(["\n", "\r\n"])
    text = ending.join(lines) + rng.choice([ending, ""])
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.03:
        data += b"\xff\xfe broken utf-8"
    return data, good


def expected_lines(data: bytes) -> int | None:
    """Non-blank lines, split at \\n only (None: not UTF-8, the whole file is refused)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return sum(1 for p in parts if p.removesuffix("\r").strip())


YAML_VALUES = [
    "1", "0", "-3", "16", "1000000000", "100000", "1.5", "true", "null", "~", "''", "'x'",
    "[]", "{}", "[1, 2]", "{a: 1}", "'中文'", "9" * 4400, ".inf", ".nan", "0x10", "1e400",
    "!!binary aGk=", "&a 5", "'\\ud800'", '"\\ud800"', "'" + "z" * 300 + "'",
]  # fmt: skip
PROVIDER_OPTIONS = [
    "{type: sim}",
    "{type: sim, options: {faults: bogus}}",
    "{type: sim, options: {faults: 5}}",
    "{type: sim, options: {faults: {'429': 2}}}",
    "{type: sim, options: {faults: '429=0.1'}}",
    "{type: sim, options: {latency: fast}}",
    "{type: sim, options: {latency: 0}}",
    "{type: sim, options: {latency: [1]}}",
    "{type: sim, options: {seed: x}}",
    "{type: sim, options: {nope: 1}}",
    "{type: sim, options: {jitter: 7}}",
    "{type: sim, options: {min_output_tokens: 0}}",
    "{type: sim, options: 5}",
    '{type: command, command: "echo \'hi"}',
    "{type: command, command: fanout-not-installed}",
    "{type: command, command: ''}",
    "{type: command}",
    "{type: command, command: cat}",
    "{type: python}",
    "{type: python, callable: 'no.such:thing'}",
    "{type: python, callable: 'os:getcwd x'}",
    "{type: openai}",
    "{type: openai, api_key_env: FANOUT_FUZZ_UNSET_KEY}",
    "{type: openai, api_key_env: sk-abcdefghijklmnopqrstuvwxyz}",
    "{type: openai, base_url: not-a-url}",
    "{type: anthropic, base_url: 'ftp://x'}",
    "{type: nosuch}",
    "{type: sim, rpm: 0}",
    "{type: sim, concurrency: -1}",
    "{}",
    "5",
]
SECTIONS = ["concurrency", "lanes", "agents", "retry", "timeouts", "scheduling", "prices", "budget"]


def _yaml_value(rng: random.Random, depth: int = 0) -> str:
    r = rng.random()
    if depth < 2 and r < 0.25:
        keys = rng.sample(["attempts", "budget", "attempt", "idle", "run", "order", "aging_s",
                           "io_intensive", "limit", "lane", "max_cost", "input", "output",
                           "备注", "x"], k=rng.randint(1, 3))  # fmt: skip
        return "{" + ", ".join(f"{k}: {_yaml_value(rng, depth + 1)}" for k in keys) + "}"
    return rng.choice(YAML_VALUES)


def config_case(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.05:
        return (
            "a: &a ["
            + ",".join(["x"] * 9)
            + "]\n"
            + "".join(
                f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n"
                for p, c in zip("abcdefgh", "bcdefghi", strict=True)
            )
        )
    if r < 0.09:
        return "concurrency: 4\nx: " + _deep(rng.randint(60, 900)) + "\n"
    if r < 0.12:
        return "retry:\n" + "".join(
            "  " * (i + 1) + f"k{i}:\n" for i in range(rng.randint(60, 200))
        )
    if r < 0.15:
        return rng.choice(
            ["\t- x", "a: b: c", "[", "{a: 1, a: 2}", "a: 1\na: 2", "- 1\n- 2", "%", "'", "\x00"]
        )
    lines = []
    if rng.random() < 0.6:
        name = rng.choice(["sim", "openai", "command", "mine", "bad name!", "中文"])
        lines.append(f"providers:\n  {name}: {rng.choice(PROVIDER_OPTIONS)}")
        if rng.random() < 0.3:
            lines.append(f"default_provider: {rng.choice([name, 'sim', 'other', '1'])}")
    for section in rng.sample(SECTIONS, k=rng.randint(0, 3)):
        lines.append(f"{section}: {_yaml_value(rng)}")
    if rng.random() < 0.1:
        lines.append(rng.choice(["max_concurrent: 3", "api_key: sk-secret", "agent_configs: {}"]))
    return "\n".join(lines) + "\n"


def run_driver(tmp_path: Path, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    manifest = tmp_path / "cases.json"
    manifest.write_text(json.dumps(cases, ensure_ascii=False), encoding="utf-8")
    results = tmp_path / "results" / "results.json"
    results.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["FANOUT_HOME"] = str(tmp_path / "home")
    p = subprocess.run(
        [sys.executable, str(DRIVER), str(manifest), str(results)],
        capture_output=True,
        text=True,
        timeout=60 + 30 * len(cases),
        env=env,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr
    out: list[dict[str, Any]] = json.loads(results.read_text(encoding="utf-8"))
    return out


def own_home(tmp_path: Path, k: int) -> dict[str, str]:
    """A run store per case: the cases run side by side, not in turn on one store's lock."""
    return {"FANOUT_HOME": str(tmp_path / "homes" / str(k))}


DOUBLED = re.compile(r"\b(at|the|a|to|of|is|in|for|and) \1\b")


def check_common(case: str, res: dict[str, Any]) -> None:
    assert res["rc"] is not None, f"{case}: hung (killed)"
    assert res["rc"] in (0, 1, 2), f"{case}: exit {res['rc']}\n{res['stderr'][-2000:]}"
    assert "Traceback" not in res["stderr"], f"{case}:\n{res['stderr'][-3000:]}"
    assert "pydantic" not in res["stderr"], f"{case}:\n{res['stderr']}"
    assert not DOUBLED.search(res["stderr"]), f"{case}:\n{res['stderr']}"
    assert all(len(line) < 2000 for line in res["stderr"].splitlines()), case


def test_generated_jsonl_files(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    cases, files = [], []
    for k in range(JSONL_FILES):
        data, good = jsonl_case(rng, k)
        src = tmp_path / f"输入{k}.jsonl"
        src.write_bytes(data)
        out = tmp_path / f"out{k}.jsonl"
        argv = ["batch", str(src), "-o", str(out), "--no-progress", "--sim-latency", "0"]
        strict = rng.random() < 0.15
        if strict:
            argv.append("--strict")
        if rng.random() < 0.1:
            argv += ["--order", "completion"]
        cases.append({"argv": argv, "cwd": str(tmp_path), "env": own_home(tmp_path, k)})
        files.append((src, out, data, good, strict))
    results = run_driver(tmp_path, cases)
    outcomes = {0: 0, 1: 0, 2: 0}
    for (src, out, data, good, strict), res in zip(files, results, strict=True):
        case = f"{src.name} (seed {SEED})"
        check_common(case, res)
        outcomes[res["rc"]] += 1
        n = expected_lines(data)
        if res["rc"] == 2:
            assert not out.exists(), case
            every_bad = f"every line is bad ({n} of {n})" in res["stderr"]  # none to run
            assert n is None or n == 0 or strict or every_bad, (
                f"{case}: refused whole\n{res['stderr']}"
            )
            continue
        assert n is not None, case
        rows = [json.loads(x) for x in out.read_text(encoding="utf-8").split("\n") if x]
        assert len(rows) == n, f"{case}: {len(rows)} output lines for {n} input lines"
        done = {r["custom_id"] for r in rows if r["error"] is None}
        assert good <= done, f"{case}: lost {good - done}\n{res['stderr']}"
        assert (res["rc"] == 0) == (len(done) == n), case
    assert min(outcomes.values()) > 0, outcomes  # the generator reaches every exit code


def test_generated_configs(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    src = tmp_path / "in.jsonl"
    src.write_text('{"id":"a","prompt":"解释"}\n{"id":"b","prompt":"x"}\n', encoding="utf-8")
    cases, outs = [], []
    for k in range(CONFIGS):
        cfg = tmp_path / f"配置{k}.yaml"
        cfg.write_text(config_case(rng), encoding="utf-8", errors="surrogatepass")
        out = tmp_path / f"out{k}.jsonl"
        argv = ["batch", str(src), "-o", str(out), "--config", str(cfg), "--no-progress"]
        cases.append({"argv": argv, "cwd": str(tmp_path), "env": own_home(tmp_path, k)})
        outs.append((cfg, out))
    results = run_driver(tmp_path, cases)
    outcomes = {0: 0, 1: 0, 2: 0}
    for (cfg, out), res in zip(outs, results, strict=True):
        text = cfg.read_text(encoding="utf-8", errors="replace")
        case = f"{cfg.name} (seed {SEED + 1}):\n{text[:400]}"
        check_common(case, res)
        outcomes[res["rc"]] += 1
        if res["rc"] == 2:
            assert not out.exists(), case
            assert len(res["stderr"].strip().splitlines()) <= 12, case  # one line, or a list
            assert "lol" not in res["stderr"]
            assert "sk-abcdefghijklmnopqrstuvwxyz" not in res["stderr"], case
        else:
            assert len(out.read_text(encoding="utf-8").splitlines()) == 2, case
    assert outcomes[0] > 0, outcomes
    assert outcomes[2] > 0, outcomes
