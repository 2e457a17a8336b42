"""Blueprints: parsing, rendering, versions, the search order, the built-in Canvas agents,
and their answers checked by the engine (one content retry with the validation error)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from fanout import CallableProvider, Engine, Request, Result, RetryPolicy, SimConfig, SimProvider
from fanout.agents import (
    Blueprint,
    builtin_blueprints,
    load_blueprint,
    load_blueprints,
    parse_blueprint,
    project_agents_dir,
    user_agents_dir,
)
from fanout.errors import ConfigError, InputError
from fanout.yamlcheck import parse_yaml

QUESTION = "什么是逆否命题？为什么原命题与它的逆否命题真值相同？"
LEARNER = (
    "逆否命题就是把条件和结论都否定，再交换位置。比如“如果下雨，地就湿”变成“如果地不湿，就没下雨”。"
)
ZH_INPUTS = {
    "question": QUESTION,
    "learner_text": LEARNER,
    "topic": "离散数学",
    "context": "命题逻辑",
}
CANVAS_AGENTS = {
    # name: (lane, expected_s, output) -- lanes and durations from the seed notes
    "scoring-agent": ("lightweight", 1.5, "json"),
    "basic-decomposition": ("io_intensive", 2.5, "json"),
    "deep-decomposition": ("lightweight", 4.0, "json"),
    "oral-explanation": ("computation_intensive", 7.0, "markdown"),
    "clarification-path": ("computation_intensive", 9.0, "markdown"),
    "four-level-explanation": ("computation_intensive", 8.0, "markdown"),
    "comparison-table": ("io_intensive", 3.5, "markdown"),
    "memory-anchor": ("io_intensive", 2.5, "markdown"),
    "example-teaching": ("computation_intensive", 8.0, "markdown"),
    "verification-question-agent": ("lightweight", 3.5, "markdown"),
}
SIMPLE = """---
description: A test agent.
lane: io_intensive
temperature: 0.3
max_tokens: 500
timeout: 20
attempts: 2
expected_s: 1.5
inputs:
  question: The question.
  topic: {required: false, default: 无}
---
Question: {question}
Topic: {topic}
"""
GOOD_SCORE = {
    "accuracy": 20,
    "imagery": 15,
    "completeness": 18,
    "originality": 17,
    "total": 70,
    "verdict": "partial",
    "feedback": "你把逆否命题的构造说清楚了，例子也贴切。还差一点：为什么真值相同。"
    "试着用真值表验证一次。",
}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real user or project blueprints leak into a test."""
    monkeypatch.setenv("FANOUT_CONFIG_DIR", str(tmp_path / "user-config"))
    monkeypatch.chdir(tmp_path)


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.md"
    path.write_text(text, encoding="utf-8")
    return path


def blueprint(body: str, *, front: str = "inputs: [question]") -> Blueprint:
    return parse_blueprint(f"---\nname: t\n{front}\n---\n{body}")


def run_tasks(provider: Any, tasks: list[Any], **engine: Any) -> list[Result]:
    async def main() -> list[Result]:
        async with Engine(providers=provider, **engine) as eng:
            run = await eng.run(tasks)
            return await run.results()

    return asyncio.run(main())


# -- parsing --------------------------------------------------------------------------------


def test_a_blueprint_file_gives_its_settings_and_prompt(tmp_path: Path) -> None:
    bp = load_blueprint(write(tmp_path, "ask", SIMPLE))
    assert bp.name == "ask"  # from the file name
    assert (bp.lane, bp.temperature, bp.max_tokens, bp.timeout) == ("io_intensive", 0.3, 500, 20)
    assert (bp.attempts, bp.expected_s, bp.output, bp.schema) == (2, 1.5, "markdown", None)
    assert bp.description == "A test agent."
    assert bp.required_inputs == ("question",)
    assert bp.inputs["question"].description == "The question."
    assert bp.body == "Question: {question}\nTopic: {topic}"
    assert bp.source == tmp_path / "ask.md"
    assert bp.origin == "file"


def test_version_is_the_short_sha256_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "ask", SIMPLE)
    bp = load_blueprint(path)
    assert bp.version == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert parse_blueprint(SIMPLE.replace("description", "name: ask\ndescription")).version != (
        bp.version
    )
    assert load_blueprint(path).version == bp.version  # stable


def test_render_fills_declared_inputs_and_keeps_every_other_brace() -> None:
    bp = blueprint(
        'Q: {question}\nLiteral: {{question}}\nJSON: {"total": 80, "x": {"y": [1]}}\n'
        "Set: {a, b} {} {1} {{ }} end"
    )
    assert bp.render({"question": "什么是集合？"}) == (
        'Q: 什么是集合？\nLiteral: {question}\nJSON: {"total": 80, "x": {"y": [1]}}\n'
        "Set: {a, b} {} {1} {{ }} end"
    )


def test_a_byte_order_mark_and_windows_line_ends_are_fine() -> None:
    bp = parse_blueprint("\ufeff---\r\nname: w\r\ninputs: [q]\r\n---\r\nHello {q}\r\n")
    assert bp.render({"q": "世界"}) == "Hello 世界"


def test_values_are_inserted_as_they_are_never_scanned_for_placeholders() -> None:
    bp = blueprint("Q: {question} / {topic}", front="inputs: [question, topic]")
    text = bp.render({"question": "写 {topic} 和 {{question}}", "topic": "T"})
    assert text == "Q: 写 {topic} 和 {{question}} / T"


def test_optional_inputs_render_their_default_and_values_become_text() -> None:
    bp = parse_blueprint(SIMPLE.replace("description", "name: ask\ndescription"))
    assert bp.render({"question": "Q"}) == "Question: Q\nTopic: 无"
    assert bp.render({"question": "Q", "topic": None}) == "Question: Q\nTopic: 无"
    assert bp.render({"question": 42, "topic": ["a", "逻辑"]}) == (
        'Question: 42\nTopic: [\n  "a",\n  "逻辑"\n]'
    )


def test_a_missing_required_input_names_the_blueprint_the_input_and_its_inputs() -> None:
    bp = builtin_blueprints()["scoring-agent"]
    with pytest.raises(InputError) as exc:
        bp.render({"question": QUESTION, "topic": ""})
    assert str(exc.value) == (
        "blueprint 'scoring-agent' needs the input 'learner_text', which was not given "
        "(given: question); its inputs are: question (required), learner_text (required), "
        "topic, context"
    )
    with pytest.raises(InputError, match=r"needs the inputs 'question', 'learner_text', which "):
        bp.render({"question": "   "})  # blank counts as missing


def test_an_input_the_blueprint_does_not_declare_is_an_error() -> None:
    with pytest.raises(InputError) as exc:
        builtin_blueprints()["oral-explanation"].render({"question": "q", "learner_txt": "x"})
    assert str(exc.value) == (
        "blueprint 'oral-explanation' has no input 'learner_txt'; its inputs are: "
        "question (required), learner_text, topic, context"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("just text", "a blueprint starts with YAML front matter between two '---' lines, then"),
        ("---\nname: x\n", "the front matter has no closing '---' line"),
        ("---\nname: x\nlane: [a\n---\nb", "line 4, column 1: not valid YAML: expected ','"),
        ("---\n- a\n---\nb", "the front matter must be a mapping of keys to values"),
        ("---\nname: x\n---\n  \n", "there is no prompt after the front matter"),
        (
            "---\nname: x\nmodle: m\n---\nb",
            "modle: unknown key; allowed keys: name, description, lane, provider, model, "
            "temperature, max_tokens, timeout, attempts, expected_s, output, schema, inputs, "
            "validators",
        ),
        (
            "---\nname: x\nmax_concurrent: 3\n---\nb",
            "max_concurrent: unknown key; per-agent limits belong in fanout.yaml "
            "(agents.<name>.limit)",
        ),
        ("---\nname: x\ntemperature: hot\n---\nb", "temperature: 'hot' is not a number"),
        ("---\nname: x\ntemperature: 3\n---\nb", "temperature: 3 is not allowed; it must be at"),
        ("---\nname: x\nattempts: 0\n---\nb", "attempts: 0 is not allowed; it must be at least 1"),
        (
            "---\nname: x\noutput: xml\n---\nb",
            "output: 'xml' is not allowed; use one of 'markdown' or 'json'",
        ),
        (
            "---\nname: Bad Name\n---\nb",
            "name: 'Bad Name' is not a usable agent name (lowercase letters, digits, '.', '_' "
            "and '-', starting with a letter or digit)",
        ),
        (
            "---\nname: x\nschema: {type: object}\n---\nb",
            "`schema` is for `output: json`; this blueprint's output is markdown",
        ),
        (
            "---\nname: x\noutput: json\nvalidators: {min_chars: 3}\n---\nb",
            "`validators` are for `output: markdown`; a JSON answer is checked by `schema`",
        ),
        (
            "---\nname: x\noutput: json\nschema: {type: object, patternProperties: {}}\n---\nb",
            "schema.patternProperties: the keyword 'patternProperties' is not supported "
            "(supported: type, properties",
        ),
        (
            "---\nname: x\nvalidators: {min_chars: 9, max_chars: 3}\n---\nb",
            "validators: min_chars (9) is larger than max_chars (3)",
        ),
        (
            "---\nname: x\ninputs: [question]\n---\nQ: {question}\nand {qestion}",
            "the prompt (line 2 of the body) uses {qestion}, which is not a declared input "
            "(inputs: question); declare it under `inputs`, or write {{qestion}} for a "
            "literal {qestion}",
        ),
        (
            "---\nname: x\ninputs: [question, topic]\n---\nQ: {question}",
            "inputs: 'topic' is declared but the prompt never uses {topic}; use it or remove it",
        ),
        (
            "---\nname: x\ninputs: {2nd: x}\n---\nb",
            "inputs: '2nd' is not a usable input name (letters, digits and _, not starting "
            "with a digit)",
        ),
        ("---\nlane: a\n---\nb", "name: required but missing"),
    ],
)
def test_a_bad_blueprint_is_one_clear_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_blueprint(text)
    assert str(exc.value).startswith(f"blueprint: {message}")


def test_errors_name_the_file_and_a_name_must_match_it(tmp_path: Path) -> None:
    path = write(tmp_path, "oral", "---\nname: oral-explanation\n---\nb")
    with pytest.raises(ConfigError) as exc:
        load_blueprint(path)
    assert str(exc.value) == (
        f"{path}: name: 'oral-explanation' differs from the file name 'oral.md'; rename the "
        "file to oral-explanation.md or drop `name`"
    )
    bad = tmp_path / "latin.md"
    bad.write_bytes(b"---\nname: latin\n---\n\xff")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: not UTF-8 text (byte 20)")):
        load_blueprint(bad)


def test_task_carries_the_blueprint_settings_and_checks_answers() -> None:
    bp = builtin_blueprints()["oral-explanation"]
    t = bp.task(ZH_INPUTS, partition="node-1", priority="high", meta={"node": "n1"})
    assert t.prompt == bp.render(ZH_INPUTS)
    assert (t.agent, t.lane, t.partition, t.output) == (
        "oral-explanation",
        "computation_intensive",
        "node-1",
        "text",
    )
    assert (t.timeout, t.attempts, t.expected_s, t.max_tokens, t.temperature) == (
        90,
        3,
        7,
        3000,
        0.7,
    )
    assert t.provider is None
    assert t.model is None
    assert t.inputs == ZH_INPUTS
    assert t.meta == {"blueprint": bp.name, "blueprint_version": bp.version, "node": "n1"}
    assert t.validate is not None
    assert t.validate("太短了。") == ("the answer has 4 characters; write at least 640")
    assert builtin_blueprints()["scoring-agent"].task(ZH_INPUTS).output == "json"


def test_the_task_key_is_stable_and_follows_partition_inputs_and_sample() -> None:
    bp = builtin_blueprints()["memory-anchor"]
    key = bp.task(ZH_INPUTS, partition="n1").key
    assert bp.task(dict(ZH_INPUTS), partition="n1").key == key
    assert bp.task(ZH_INPUTS, partition="n2").key != key
    assert bp.task({**ZH_INPUTS, "topic": "集合论"}, partition="n1").key != key
    assert bp.task(ZH_INPUTS, partition="n1", sample=1).key != key
    assert bp.task(ZH_INPUTS, key="mine").key == "mine"


def test_overrides_replace_run_settings_only() -> None:
    bp = builtin_blueprints()["memory-anchor"]
    o = bp.with_overrides(lane="fast", model="qwen2.5", timeout=None)
    assert (o.lane, o.model, o.timeout, o.version) == ("fast", "qwen2.5", bp.timeout, bp.version)
    assert bp.with_overrides() is bp
    with pytest.raises(ConfigError, match=r"cannot override body of blueprint 'memory-anchor'"):
        bp.with_overrides(body="x")


# -- where blueprints come from ----------------------------------------------------------------


def test_search_order_is_package_then_user_then_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = tmp_path / "user-config" / "agents"
    project = tmp_path / ".fanout" / "agents"
    write(user, "oral-explanation", "---\ninputs: [question]\nlane: user-lane\n---\nU {question}")
    write(user, "mine", "---\nlane: u\n---\nuser mine")
    write(project, "mine", "---\nlane: p\n---\nproject mine")
    write(project, "README", "not a blueprint")
    write(project, "_draft", "not a blueprint either")
    found = load_blueprints()
    assert list(found) == sorted(found)
    assert set(CANVAS_AGENTS) | {"mine"} == set(found)
    assert found["oral-explanation"].origin == "user"
    assert found["oral-explanation"].lane == "user-lane"
    assert found["oral-explanation"].source == user / "oral-explanation.md"
    assert found["oral-explanation"].replaces == builtin_blueprints()["oral-explanation"].source
    assert (found["mine"].origin, found["mine"].lane) == ("project", "p")
    assert found["mine"].replaces == user / "mine.md"
    assert found["scoring-agent"].origin == "package"
    # explicit directories replace the defaults
    other = tmp_path / "elsewhere"
    write(other, "mine", "---\nlane: e\n---\nelsewhere")
    assert load_blueprints(project_dir=other)["mine"].lane == "e"
    assert load_blueprints(user_dir=other, project_dir=other)["mine"].origin == "project"
    monkeypatch.delenv("FANOUT_CONFIG_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert "mine" in load_blueprints()  # project only now


def test_default_directories(tmp_path: Path) -> None:
    assert user_agents_dir({"FANOUT_CONFIG_DIR": "/c"}) == Path("/c/agents")
    assert user_agents_dir({"XDG_CONFIG_HOME": "/x"}) == Path("/x/fanout/agents")
    assert user_agents_dir({}) == Path.home() / ".config" / "fanout" / "agents"
    assert project_agents_dir(tmp_path) == tmp_path / ".fanout" / "agents"


def test_a_directory_given_explicitly_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'nope'}: no such blueprint")):
        load_blueprints(project_dir=tmp_path / "nope")


def test_a_broken_user_blueprint_is_reported_with_its_file(tmp_path: Path) -> None:
    path = write(tmp_path / "user-config" / "agents", "bad", "---\nlane: [x\n---\nb")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: line 3, column 1: not valid YAML")):
        load_blueprints()


# -- the built-in Canvas learning agents -------------------------------------------------------


def test_the_package_ships_the_ten_canvas_agents_as_data_files() -> None:
    folder = resources.files("fanout.agents").joinpath("builtin")
    assert sorted(e.name for e in folder.iterdir() if e.name.endswith(".md")) == sorted(
        f"{n}.md" for n in CANVAS_AGENTS
    )
    found = builtin_blueprints()
    assert set(found) == set(CANVAS_AGENTS)
    for name, (lane, expected_s, output) in CANVAS_AGENTS.items():
        bp = found[name]
        assert (bp.lane, bp.expected_s, bp.output, bp.origin) == (
            lane,
            expected_s,
            output,
            "package",
        )
        assert re.fullmatch(r"[0-9a-f]{12}", bp.version)
        assert bp.description
        assert bp.timeout
        assert bp.attempts
        assert bp.attempts >= 2
        assert (bp.schema is not None) == (output == "json")
        assert bp.provider is None
        assert bp.model is None


@pytest.mark.parametrize("name", sorted(CANVAS_AGENTS))
def test_every_canvas_agent_renders_with_chinese_inputs(name: str) -> None:
    bp = builtin_blueprints()[name]
    prompt = bp.render(ZH_INPUTS)
    for value in ZH_INPUTS.values():
        assert value in prompt
    assert f"<learner_text>\n{LEARNER}\n</learner_text>" in prompt
    assert "language of the learner's text" in prompt
    assert not re.search(r"\{(question|learner_text|topic|context)\}", prompt)
    if bp.output == "json":
        assert '\n{"' in prompt  # the JSON shape survived rendering
    minimal = bp.render({"question": QUESTION, "learner_text": LEARNER})
    assert "<topic>\n\n</topic>" in minimal


@pytest.mark.parametrize("name", ["scoring-agent", "basic-decomposition", "deep-decomposition"])
@pytest.mark.parametrize("seed", range(5))
def test_the_simulator_answers_json_agents_validly_when_given_the_schema(
    name: str, seed: int
) -> None:
    bp = builtin_blueprints()[name]
    sim = SimProvider(SimConfig(seed=seed, base_latency_s=0, jitter=0))
    request = Request(
        model="sim-1",
        messages=[{"role": "user", "content": bp.render(ZH_INPUTS)}],
        max_tokens=bp.max_tokens or 1024,
        json_schema=dict(bp.schema or {}),
    )
    answer = asyncio.run(sim.complete(request))
    assert bp.check(answer.text) is None, answer.text


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({}, None),
        ({"total": 101}, "$.total: 101 is greater than the maximum of 100"),
        ({"accuracy": 26}, "$.accuracy: 26 is greater than the maximum of 25"),
        ({"imagery": -1}, "$.imagery: -1 is less than the minimum of 0"),
        ({"completeness": 12.5}, "$.completeness: expected an integer, got a number 12.5"),
        ({"originality": True}, "$.originality: expected an integer, got a boolean true"),
        ({"verdict": "good"}, '$.verdict: "good" is not one of "mastered", "partial", '),
        ({"feedback": ""}, "$.feedback: 0 characters, fewer than the minimum of 1"),
        ({"total": None}, "$.total: expected an integer, got null null"),
        ({"score": 3}, "$: the property 'score' is not allowed (allowed: accuracy, imagery, "),
    ],
)
def test_the_scoring_schema(change: dict[str, Any], problem: str | None) -> None:
    bp = builtin_blueprints()["scoring-agent"]
    got = bp.check(json.dumps({**GOOD_SCORE, **change}, ensure_ascii=False))
    if problem is None:
        assert got is None
    else:
        assert got is not None
        assert got.startswith(f"the JSON does not match the schema: {problem}")
    for key in ("verdict", "feedback", "accuracy"):
        partial = {k: v for k, v in GOOD_SCORE.items() if k != key}
        assert bp.check(json.dumps(partial)) == (
            f"the JSON does not match the schema: $: the required property {key!r} is missing"
        )
    assert bp.check(json.dumps({**GOOD_SCORE, "total": 70.0})) is None  # 70.0 is an integer


# -- through the engine --------------------------------------------------------------------------

MARKDOWN_AGENTS = sorted(
    n for n, (_, _, out) in CANVAS_AGENTS.items() if out == "markdown" and n != "comparison-table"
)


@pytest.mark.parametrize("name", MARKDOWN_AGENTS)
def test_markdown_agents_run_on_the_simulator(name: str) -> None:
    bp = builtin_blueprints()[name]
    assert bp.validators is not None
    assert bp.validators.min_chars
    assert bp.validators.max_chars
    # Chinese simulator answers are about one character per token: aim inside the range
    size = (bp.validators.min_chars + bp.validators.max_chars) // 2
    sim = SimProvider(
        SimConfig(base_latency_s=0, jitter=0, min_output_tokens=size, max_output_tokens=size)
    )
    tasks = [bp.task(ZH_INPUTS, partition=f"node-{i}") for i in range(3)]
    results = run_tasks(sim, tasks, lanes={"computation_intensive": 2, "io_intensive": 4})
    for r in results:
        assert r.ok, r.error
        assert r.attempts == 1
        assert r.text is not None
        assert bp.check(r.text) is None
        assert re.search("[\u4e00-\u9fff]", r.text)


class Canned:
    """A provider function answering from a list, recording every request."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> str:
        self.requests.append(request)
        return self.answers[min(len(self.requests), len(self.answers)) - 1]

    def last_message(self, n: int) -> str:
        return str(self.requests[n].messages[-1]["content"])


def canned_run(bp: Blueprint, canned: Callable[[Request], str], attempts: int = 4) -> Result:
    provider = CallableProvider(canned, name="canned", threaded=False)
    policy = RetryPolicy(attempts=attempts, backoff_base_s=0)
    task = bp.task(ZH_INPUTS)
    return run_tasks(provider, [task], retry=policy)[0]


def test_invalid_json_gets_one_retry_with_the_validation_error_in_the_prompt() -> None:
    bp = builtin_blueprints()["scoring-agent"]
    canned = Canned(json.dumps({**GOOD_SCORE, "total": 130}), json.dumps(GOOD_SCORE))
    r = canned_run(bp, canned)
    assert r.ok
    assert r.attempts == 2
    assert r.data == GOOD_SCORE
    assert len(canned.requests[0].messages) == 1
    assert canned.last_message(1) == (
        "Your previous answer could not be used: the JSON does not match the schema: "
        "$.total: 130 is greater than the maximum of 100. Answer again in full, in the "
        "required format."
    )
    assert canned.requests[0].json_mode
    assert canned.requests[1].json_mode


def test_json_that_stays_invalid_fails_after_the_one_content_retry() -> None:
    bp = builtin_blueprints()["basic-decomposition"]
    canned = Canned('{"sub_questions": []}')
    r = canned_run(bp, canned, attempts=4)
    assert not r.ok
    assert r.attempts == 2
    assert r.error is not None
    assert (r.error.error_class, r.error.kind) == ("content", "invalid_output")
    assert r.error.message == (
        "the JSON does not match the schema: $.sub_questions: 0 items, fewer than the minimum of 3"
    )


def test_text_that_is_not_json_is_retried_with_the_parse_error() -> None:
    bp = builtin_blueprints()["deep-decomposition"]
    item = {
        "text": "边界在哪里？",
        "type": "boundary",
        "difficulty": "advanced",
        "guidance": "想想",
    }
    good = json.dumps({"sub_questions": [item] * 3}, ensure_ascii=False)
    canned = Canned("好的，下面是子问题：" + good, good)
    r = canned_run(bp, canned)
    assert r.ok
    assert r.attempts == 2
    assert canned.last_message(1).startswith(
        "Your previous answer could not be used: the answer is not valid JSON (Expecting value"
    )


def test_the_comparison_table_agent_needs_a_table() -> None:
    bp = builtin_blueprints()["comparison-table"]
    table = (
        "逆命题、否命题和逆否命题很容易混淆，因为它们都由原命题变换而来。\n\n"
        "| 方面 | 逆命题 | 否命题 | 逆否命题 |\n| --- | --- | --- | --- |\n"
        "| 构造 | 交换条件与结论 | 同时否定条件与结论 | 交换并否定 |\n"
        "| 与原命题的真值 | 不一定相同 | 不一定相同 | 一定相同 |\n\n"
        "**如何区分**：只有逆否命题与原命题等价。\n" * 2
    )
    prose = "逆否命题与原命题等价，而逆命题与否命题互为逆否，所以它们彼此等价。" * 8
    assert bp.check(table) is None
    canned = Canned(prose, table)
    r = canned_run(bp, canned)
    assert r.ok
    assert r.attempts == 2
    assert "the answer has no Markdown table" in canned.last_message(1)
    failed = canned_run(bp, Canned(prose))
    assert failed.error is not None
    assert failed.error.message.startswith("the answer has no Markdown table; include one")


def test_a_cut_off_explanation_is_a_content_fault() -> None:
    bp = builtin_blueprints()["memory-anchor"]
    cut = "### 类比\n逆否命题就像照镜子再转身。" * 12 + "故事是这样的……"
    r = canned_run(bp, Canned(cut))
    assert not r.ok
    assert r.error is not None
    assert r.error.message == (
        "the answer ends with '…', so it looks cut off; write it in full and end with a "
        "complete sentence"
    )


def test_engine_takes_a_json_answer_out_of_a_code_fence() -> None:
    import asyncio

    import fanout

    async def fenced(req: fanout.Request) -> str:
        return '```json\n{"a": 1}\n```'

    async def main() -> fanout.Run:
        async with fanout.Engine(providers=fanout.CallableProvider(fenced)) as engine:
            return await engine.run([fanout.Task("x", key="x", output="json")])

    r = asyncio.run(main()).result("x")
    assert r is not None
    assert r.ok
    assert r.data == {"a": 1}
    assert r.attempts == 1


def test_the_package_blueprints_read_the_same_through_libyaml_as_through_the_strict_loader() -> (
    None
):
    folder = resources.files("fanout.agents").joinpath("builtin")
    files = [e for e in folder.iterdir() if e.name.endswith(".md") and e.name != "README.md"]
    assert len(files) >= 10
    for entry in files:
        text, path = entry.read_text(encoding="utf-8"), Path(str(entry))
        shipped = parse_blueprint(text, source=path, origin="package")  # libyaml's parser
        strict = parse_blueprint(text, source=path, origin="user")  # the pure-Python one
        assert dataclasses.replace(strict, origin="package") == shipped, entry.name
    # the duplicate-key check holds on the fast path too
    with pytest.raises(ConfigError, match=r"'名字' appears twice \(first on line 1\)"):
        parse_yaml("名字: 甲\n名字: 乙\n", source="内置", shipped=True)
