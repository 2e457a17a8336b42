"""Agent blueprints (spec C5): a Markdown prompt with YAML front matter.

```
---
name: oral-explanation          # optional: defaults to the file name without .md
description: ...
lane: computation_intensive
output: markdown                # or json, with an optional `schema`
inputs:
  question: {description: ..., required: true}
  topic: {required: false, default: ""}
validators: {min_chars: 640, max_chars: 1800}
---
Explain {question} ...
```

Placeholders: `{name}` where `name` is a declared input is replaced by that input's
value; `{{name}}` is a literal `{name}`. Every other brace is literal text, so JSON
examples such as `{"total": 80}` need no escaping. A `{name}` whose name is not declared
is an error when the blueprint is read (a typo, or a literal to write as `{{name}}`).
Values are inserted as they are and never scanned for placeholders themselves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fanout.agents.checks import check_json, check_markdown
from fanout.agents.schema import SchemaError, check_schema
from fanout.errors import ConfigError, InputError
from fanout.tasks import OnDependencyFailure, Priority, Result, Task
from fanout.yamlcheck import explain, parse_yaml

OutputFormat = Literal["markdown", "json"]
Origin = Literal["package", "user", "project", "file", "inline"]

VERSION_CHARS = 12
PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^(?:---|\.\.\.)[ \t]*\r?$\n?", re.S | re.M)
#: keys people write for things the front matter calls otherwise
_HINTS = {
    "max_concurrent": "per-agent limits belong in fanout.yaml (agents.<name>.limit)",
    "limit": "per-agent limits belong in fanout.yaml (agents.<name>.limit)",
    "timeout_seconds": "use `timeout` (seconds)",
    "retry_attempts": "use `attempts` (all attempts, the first included)",
    "json_schema": "use `schema`",
    "prompt": "the prompt is the Markdown after the front matter",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class InputSpec(_Strict):
    """A declared input. A missing optional input renders as `default`."""

    description: str = ""
    required: bool = True
    default: str = ""


class MarkdownChecks(_Strict):
    """Validators of a Markdown answer (see `fanout.agents.checks.check_markdown`)."""

    min_chars: int | None = Field(default=None, ge=1)
    max_chars: int | None = Field(default=None, ge=1)
    require_table: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> MarkdownChecks:
        if self.min_chars and self.max_chars and self.min_chars > self.max_chars:
            raise ValueError(
                f"min_chars ({self.min_chars}) is larger than max_chars ({self.max_chars})"
            )
        return self


class FrontMatter(_Strict):
    """The YAML front matter of a blueprint file."""

    name: str | None = None
    description: str = ""
    lane: str | None = None
    provider: str | None = None
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    attempts: int | None = Field(default=None, ge=1)
    expected_s: float | None = Field(default=None, gt=0)
    output: OutputFormat = "markdown"
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    validators: MarkdownChecks | None = None
    #: the agent's display name by language code (`{zh: 记忆锚点, en: Memory anchor}`)
    title: dict[str, str] = Field(default_factory=dict)

    @field_validator("inputs", mode="before")
    @classmethod
    def _normalise_inputs(cls, value: Any) -> Any:
        """Accept `[a, b]`, `{a: "description"}` and `{a: null}` for the full form."""
        if value is None:
            return {}
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = dict.fromkeys(value)
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for k, v in value.items():
                if isinstance(k, str) and not _INPUT_NAME.match(k):
                    raise ValueError(
                        f"{k!r} is not a usable input name (letters, digits and _, "
                        "not starting with a digit)"
                    )
                out[k] = {} if v is None else {"description": v} if isinstance(v, str) else v
            return out
        return value

    @field_validator("title", mode="before")
    @classmethod
    def _title_map(cls, value: Any) -> Any:
        """A plain string is the English name."""
        if value is None:
            return {}
        return {"en": value} if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _usable_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a usable agent name (lowercase letters, digits, '.', '_' "
                "and '-', starting with a letter or digit)"
            )
        return value

    @model_validator(mode="after")
    def _fits_output(self) -> FrontMatter:
        if self.json_schema is not None:
            try:
                check_schema(self.json_schema)
            except SchemaError as exc:
                raise ValueError(str(exc)) from None
        if self.output == "markdown" and self.json_schema is not None:
            raise ValueError("`schema` is for `output: json`; this blueprint's output is markdown")
        if self.output == "json" and self.validators is not None:
            raise ValueError(
                "`validators` are for `output: markdown`; a JSON answer is checked by `schema`"
            )
        return self


@dataclass(frozen=True, slots=True, kw_only=True)
class Blueprint:
    """A parsed blueprint: what to ask, how to run it, how to check the answer."""

    name: str
    body: str
    version: str
    #: display names by language code; see `display_name`
    title: Mapping[str, str] = dataclasses.field(default_factory=dict)
    description: str = ""
    lane: str | None = None
    provider: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    attempts: int | None = None
    expected_s: float | None = None
    output: OutputFormat = "markdown"
    schema: Mapping[str, Any] | None = None
    inputs: Mapping[str, InputSpec] = dataclasses.field(default_factory=dict)
    validators: MarkdownChecks | None = None
    source: Path | None = None
    origin: Origin = "inline"
    replaces: Path | None = None  # the file of the same name this one overrides

    def display_name(self, language: str) -> str:
        """The name to show a reader of `language`: its title, else the English one, else
        the agent's id."""
        return self.title.get(language) or self.title.get("en") or self.name

    @property
    def required_inputs(self) -> tuple[str, ...]:
        return tuple(n for n, spec in self.inputs.items() if spec.required)

    def describe(self) -> str:
        """What `fanout agents show` prints: settings, inputs, checks, then the prompt."""
        lines = [f"{self.name}  (version {self.version}, {self.origin})"]
        if self.source is not None:
            lines.append(f"  file: {self.source}")
        if self.replaces is not None:
            lines.append(f"  overrides: {self.replaces}")
        if self.title:
            lines.append("  title: " + ", ".join(f"{k}: {v}" for k, v in self.title.items()))
        if self.description:
            lines.append(f"  {self.description}")
        settings = {
            "lane": self.lane,
            "provider": self.provider,
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "timeout": self.timeout,
            "attempts": self.attempts,
            "expected_s": self.expected_s,
            "output": self.output,
        }
        lines.extend(f"  {k}: {v}" for k, v in settings.items() if v is not None)
        lines.append("  inputs:")
        for name, spec in self.inputs.items():
            req = "required" if spec.required else f"optional, default {spec.default!r}"
            desc = f" - {spec.description}" if spec.description else ""
            lines.append(f"    {name} ({req}){desc}")
        if self.validators is not None:
            lines.append(f"  checks: {self.validators.model_dump(exclude_none=True)}")
        if self.schema is not None:
            import json

            lines.append("  schema: " + json.dumps(self.schema, ensure_ascii=False))
        lines += ["", self.body.rstrip()]
        return "\n".join(lines)

    def render(self, inputs: Mapping[str, Any] | None = None) -> str:
        """The prompt with `inputs` filled in. Raises `InputError` for a missing required
        input or one the blueprint does not declare."""
        values = self._values(inputs or {})

        def fill(m: re.Match[str]) -> str:
            literal, name = m.group(1), m.group(2)
            return "{" + literal + "}" if literal is not None else values[name]

        return PLACEHOLDER.sub(fill, self.body)

    def check(self, text: str) -> str | None:
        """Why `text` cannot be used as this agent's answer, or None."""
        if self.output == "json":
            return check_json(text, self.schema)
        v = self.validators
        if v is None:
            return check_markdown(text)
        return check_markdown(
            text, min_chars=v.min_chars, max_chars=v.max_chars, require_table=v.require_table
        )

    def task(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        partition: str | None = None,
        sample: int = 0,
        priority: Priority | str | int = Priority.NORMAL,
        depends_on: Iterable[str | Task] = (),
        on_dependency_failure: OnDependencyFailure = "skip",
        when: Callable[[Mapping[str, Result]], bool] | None = None,
        then: Callable[[Result], Iterable[Task] | None] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Task:
        """A `Task` asking this agent about `inputs` (rendered now, so errors come early)."""
        given = dict(inputs or {})
        return Task(
            self.render(given),
            key=key,
            agent=self.name,
            lane=self.lane,
            partition=partition,
            inputs=given,
            sample=sample,
            priority=priority,
            depends_on=depends_on,
            on_dependency_failure=on_dependency_failure,
            when=when,
            then=then,
            provider=self.provider,
            model=self.model,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            timeout=self.timeout,
            attempts=self.attempts,
            expected_s=self.expected_s,
            output="json" if self.output == "json" else "text",
            schema=self.schema if self.output == "json" else None,
            validate=self.check,
            meta={"blueprint": self.name, "blueprint_version": self.version, **(meta or {})},
        )

    def with_overrides(self, **changes: Any) -> Blueprint:
        """A copy with run settings replaced (lane, provider, model, temperature, max_tokens,
        timeout, attempts, expected_s); None values are ignored."""
        unknown = sorted(set(changes) - set(OVERRIDABLE))
        if unknown:
            raise ConfigError(
                f"cannot override {', '.join(unknown)} of blueprint {self.name!r} "
                f"(overridable: {', '.join(OVERRIDABLE)})"
            )
        kept = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **kept) if kept else self

    def _values(self, inputs: Mapping[str, Any]) -> dict[str, str]:
        unknown = [k for k in inputs if k not in self.inputs]
        if unknown:
            raise InputError(
                f"blueprint {self.name!r} has no input {unknown[0]!r}; "
                f"its inputs are: {self._describe_inputs()}"
            )
        values: dict[str, str] = {}
        missing: list[str] = []
        for name, spec in self.inputs.items():
            text = _as_text(inputs.get(name))
            if text is None or not text.strip():
                if spec.required:
                    missing.append(name)
                    continue
                text = spec.default if text is None else text
            values[name] = text
        if missing:
            given = ", ".join(k for k in inputs if (_as_text(inputs[k]) or "").strip())
            noun, verb = ("input", "was") if len(missing) == 1 else ("inputs", "were")
            raise InputError(
                f"blueprint {self.name!r} needs the {noun} {', '.join(map(repr, missing))}, "
                f"which {verb} not given (given: {given or 'none'}); "
                f"its inputs are: {self._describe_inputs()}"
            )
        return values

    def _describe_inputs(self) -> str:
        parts = [n + (" (required)" if s.required else "") for n, s in self.inputs.items()]
        return ", ".join(parts) or "none"


OVERRIDABLE = (
    "lane",
    "provider",
    "model",
    "temperature",
    "max_tokens",
    "timeout",
    "attempts",
    "expected_s",
)


def parse_blueprint(
    text: str,
    *,
    source: Path | None = None,
    origin: Origin = "inline",
    raw: bytes | None = None,
) -> Blueprint:
    """Parse a blueprint's text. `raw` (the file's bytes) is what `version` hashes; by
    default the UTF-8 encoding of `text`. Raises `ConfigError` naming the file. The
    package's own blueprints (`origin` "package", read by every command that plans) go
    through libyaml's parser."""
    where = str(source) if source is not None else "blueprint"
    version = hashlib.sha256(raw if raw is not None else text.encode()).hexdigest()
    text = text.removeprefix("\ufeff")
    m = _FRONT_MATTER.match(text)
    if m is None:
        if text.startswith("---"):
            raise ConfigError(f"{where}: the front matter has no closing '---' line")
        raise ConfigError(
            f"{where}: a blueprint starts with YAML front matter between two '---' lines, "
            "then the prompt"
        )
    data = parse_yaml(m.group(1), source=where, line_offset=1, shipped=origin == "package")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the front matter must be a mapping of keys to values")
    try:
        fm = FrontMatter.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, source=where, root=FrontMatter, hints=_HINTS) from None
    name = fm.name
    if source is not None and name is not None and name != source.stem:
        raise ConfigError(
            f"{where}: name: {name!r} differs from the file name {source.name!r}; "
            f"rename the file to {name}.md or drop `name`"
        )
    if name is None:
        if source is None:
            raise ConfigError(f"{where}: name: required but missing")
        name = source.stem
    body = text[m.end() :].strip()
    if not body:
        raise ConfigError(f"{where}: there is no prompt after the front matter")
    _check_placeholders(where, body, fm.inputs)
    return Blueprint(
        name=name,
        body=body,
        version=version[:VERSION_CHARS],
        title=fm.title,
        description=fm.description,
        lane=fm.lane,
        provider=fm.provider,
        model=fm.model,
        temperature=fm.temperature,
        max_tokens=fm.max_tokens,
        timeout=fm.timeout,
        attempts=fm.attempts,
        expected_s=fm.expected_s,
        output=fm.output,
        schema=fm.json_schema,
        inputs=fm.inputs,
        validators=fm.validators,
        source=source,
        origin=origin,
    )


def _check_placeholders(where: str, body: str, inputs: Mapping[str, InputSpec]) -> None:
    used: set[str] = set()
    declared = ", ".join(inputs) or "none"
    for m in PLACEHOLDER.finditer(body):
        name = m.group(2)
        if name is None:
            continue
        if name not in inputs:
            line = body.count("\n", 0, m.start()) + 1
            raise ConfigError(
                f"{where}: the prompt (line {line} of the body) uses {{{name}}}, which is not "
                f"a declared input (inputs: {declared}); declare it under `inputs`, or write "
                f"{{{{{name}}}}} for a literal {{{name}}}"
            )
        used.add(name)
    unused = [n for n in inputs if n not in used]
    if unused:
        raise ConfigError(
            f"{where}: inputs: {unused[0]!r} is declared but the prompt never uses "
            f"{{{unused[0]}}}; use it or remove it"
        )


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)
