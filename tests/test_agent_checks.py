"""Answer checks: the Markdown validators and the JSON Schema subset."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fanout.agents import SchemaError, check_json, check_markdown, check_schema, schema_problem

GOOD_ZH = (
    "逆否命题是把原命题的条件和结论同时否定，再交换位置得到的命题。"
    "例如“如果下雨，地就湿”的逆否命题是“如果地不湿，那么没有下雨”。"
    "它和原命题同真同假……这一点可以用真值表验证。"
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "好的\x00回答。",
            "the answer contains a NUL character (at character 2); write plain text",
        ),
        (
            "好的\ufffd回答。",
            "the answer contains U+FFFD, a character lost in decoding (at character 2); write "
            "the answer again without broken characters",
        ),
        (GOOD_ZH + "接下来...", "the answer ends with '...', so it looks cut off; write it in"),
        (GOOD_ZH + "接下来…", "the answer ends with '…', so it looks cut off"),
        (GOOD_ZH + "接下来……  \n", "the answer ends with '…', so it looks cut off"),
        (GOOD_ZH + "**重点是……**", "the answer ends with '…', so it looks cut off"),
        (GOOD_ZH + "。。。", "the answer ends with '。。。', so it looks cut off"),
        (GOOD_ZH + "（未完）", "the answer ends with '（未完）', so it looks cut off"),
        (GOOD_ZH + "(未完待续)", "the answer ends with '(未完待续)', so it looks cut off"),
        ("Long answer [Truncated]", "the answer ends with '[Truncated]', so it looks cut off"),
        (
            GOOD_ZH + "\n```python\nx = 1\n",
            "the answer has an unclosed ``` code block, so it looks cut off; finish it",
        ),
    ],
)
def test_markdown_faults(text: str, problem: str) -> None:
    got = check_markdown(text)
    assert got is not None
    assert got.startswith(problem)


def test_markdown_lengths_and_tables() -> None:
    n = len(GOOD_ZH)
    assert check_markdown(GOOD_ZH, min_chars=n, max_chars=n) is None
    assert check_markdown(f"\n  {GOOD_ZH}  \n", min_chars=n, max_chars=n) is None
    assert check_markdown(GOOD_ZH, min_chars=n + 1) == (
        f"the answer has {n} characters; write at least {n + 1}"
    )
    assert check_markdown(GOOD_ZH, max_chars=n - 1) == (
        f"the answer has {n} characters; keep it to at most {n - 1}"
    )
    table = "| 概念 | 含义 |\n|:---|---:|\n| 逆命题 | 交换 |\n"
    assert check_markdown(table, require_table=True) is None
    assert check_markdown("概念 | 含义\n--- | ---\n逆 | 换\n", require_table=True) is None
    got = check_markdown(GOOD_ZH, require_table=True)
    assert got is not None
    assert got.startswith("the answer has no Markdown table")


@pytest.mark.parametrize(
    "text",
    [
        GOOD_ZH,  # an ellipsis inside the text is fine
        "Closed fences are fine:\n```python\nx = ...\n```\nDone.",
        "An answer that ends with a question?",
        "结尾是引号。”",
        "Three dots in a path: ../docs are fine here.",
    ],
)
def test_good_markdown_passes(text: str) -> None:
    assert check_markdown(text) is None


def test_check_json() -> None:
    assert check_json('{"a": 1}') is None
    got = check_json('```json\n{"a": 1}\n```')
    assert got is not None
    assert got.startswith(
        "the answer is not valid JSON (Expecting value: line 1 column 1 (char 0)); answer with "
        "the JSON object alone, without code fences or text around it"
    )
    assert check_json('{"a": "\ufffd"}') is not None
    schema = {"type": "object", "required": ["a"]}
    assert check_json("{}", schema) == (
        "the JSON does not match the schema: $: the required property 'a' is missing"
    )


ITEMS = {
    "type": "object",
    "properties": {
        "sub_questions": {
            "type": "array",
            "minItems": 1,
            "maxItems": 2,
            "items": {
                "type": "object",
                "required": ["text"],
                "properties": {"text": {"type": "string", "minLength": 2, "maxLength": 5}},
                "additionalProperties": False,
            },
        },
        "odd key": {"type": ["string", "null"]},
        "free": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}


@pytest.mark.parametrize(
    ("instance", "schema", "problem"),
    [
        ({"sub_questions": [{"text": "好问题"}]}, ITEMS, None),
        ({"sub_questions": []}, ITEMS, "$.sub_questions: 0 items, fewer than the minimum of 1"),
        (
            {"sub_questions": [{"text": "ab"}] * 3},
            ITEMS,
            "$.sub_questions: 3 items, more than the maximum of 2",
        ),
        (
            {"sub_questions": [{"text": "ab"}, {"text": "逆否命题是什么"}]},
            ITEMS,
            "$.sub_questions[1].text: 7 characters, more than the maximum of 5",
        ),
        (
            {"sub_questions": [{"text": "a"}]},
            ITEMS,
            "$.sub_questions[0].text: 1 characters, fewer than the minimum of 2",
        ),
        (
            {"sub_questions": [{"text": "ab", "hint": 1}]},
            ITEMS,
            "$.sub_questions[0]: the property 'hint' is not allowed (allowed: text)",
        ),
        ({"sub_questions": [{}]}, ITEMS, "$.sub_questions[0]: the required property 'text' is"),
        ({"odd key": None}, ITEMS, None),
        ({"odd key": 3}, ITEMS, '$["odd key"]: expected a string or null, got an integer 3'),
        ({"free": {"a": 1, "b": "x"}}, ITEMS, '$.free.b: expected an integer, got a string "x"'),
        ([], ITEMS, "$: expected an object, got an array []"),
        (3.0, {"type": "integer"}, None),
        (True, {"type": "integer"}, "$: expected an integer, got a boolean true"),
        (True, {"type": "number"}, "$: expected a number, got a boolean true"),
        (math.nan, {"type": "number"}, "$: expected a number, got a non-finite number NaN"),
        (1, {"enum": [True, "1"]}, '$: 1 is not one of true, "1"'),
        (1.0, {"enum": [1]}, None),
        (False, {"const": 0}, "$: false is not the required value 0"),
        (5, {"minimum": 6}, "$: 5 is less than the minimum of 6"),
        (7.5, {"maximum": 7}, "$: 7.5 is greater than the maximum of 7"),
        ("short", {"minimum": 6}, None),  # keywords apply to their own types only
        ("逆否", {"minLength": 2, "maxLength": 2}, None),  # characters, not bytes
    ],
)
def test_schema_problem(instance: Any, schema: dict[str, Any], problem: str | None) -> None:
    got = schema_problem(instance, schema)
    if problem is None:
        assert got is None
    else:
        assert got is not None
        assert got.startswith(problem)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ([], "schema: a schema is a mapping of keywords, got array"),
        (
            {"type": "object", "oneOf": []},
            "schema.oneOf: the keyword 'oneOf' is not supported (supported: type, properties",
        ),
        ({"type": "text"}, "schema.type: 'text' is not a type; use one of object, array"),
        ({"type": []}, "schema.type: [] is not a type"),
        (
            {"properties": {"a": {"format": "date"}}},
            "schema.properties.a.format: the keyword 'format' is not supported",
        ),
        ({"items": [{}]}, "schema.items: a list of schemas (tuple form) is not supported"),
        ({"minItems": -1}, "schema.minItems: a whole number >= 0 is needed, got -1"),
        ({"maxLength": True}, "schema.maxLength: a whole number >= 0 is needed, got True"),
        ({"maximum": "9"}, "schema.maximum: a number is needed, got '9'"),
        ({"enum": []}, "schema.enum: a non-empty list of allowed values is needed"),
        ({"required": "a"}, "schema.required: a list of property names is needed"),
        ({"properties": []}, "schema.properties: a mapping of property names to schemas"),
        ({"additionalProperties": "no"}, "schema.additionalProperties: a schema is a mapping"),
    ],
)
def test_check_schema_rejects_what_it_cannot_enforce(schema: Any, message: str) -> None:
    with pytest.raises(SchemaError) as exc:
        check_schema(schema)
    assert str(exc.value).startswith(message)


def test_check_schema_accepts_annotations() -> None:
    check_schema(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Score",
            "description": "d",
            "type": ["object", "null"],
            "properties": {"a": {"type": "integer", "default": 1, "examples": [1]}},
            "additionalProperties": {"type": "string"},
            "items": {"type": "string"},
        }
    )
