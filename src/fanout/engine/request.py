"""From a task to the request a provider gets, and from a completion back to a usable answer.

Pure functions over a `Task`: the engine calls them for every attempt, and the result cache
calls `build_request` for the canonical first attempt of a task (its cache key).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fanout.errors import EmptyOutput, InvalidOutput, TruncatedOutput
from fanout.providers.base import Completion, Request, estimate_tokens
from fanout.tasks import Result, Task

_BODY_KEYS = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "temperature"})


def build_request(
    t: Task,
    attempt: int,
    model: str,
    max_tokens: int,
    deps: Mapping[str, Result] | None = None,
    retry: bool = True,
) -> Request:
    """The request for attempt `attempt` of `t`. `deps` feeds a callable prompt; with
    `retry=False` the retry adjustments (a hint after invalid output) are left out, which
    gives the task's canonical request."""
    body = t.body
    extra: dict[str, Any] = {}
    mt = t.max_tokens
    temperature = t.temperature
    if body is not None:
        messages = list(body.get("messages") or [])
        if not messages and "prompt" in body:
            messages = [{"role": "user", "content": str(body["prompt"])}]
        mt = mt or body_max_tokens(t)
        if temperature is None and body.get("temperature") is not None:
            temperature = float(body["temperature"])
        extra = {k: v for k, v in body.items() if k not in _BODY_KEYS}
    else:
        p = t.prompt
        if callable(p):
            p = p(deps or {})
        messages = [{"role": "user", "content": p}] if isinstance(p, str) else list(p or [])
    if retry and t.retry_hint:
        messages.append(
            {
                "role": "user",
                "content": "Your previous answer could not be used: "
                f"{t.retry_hint}. Answer again in full, in the required format.",
            }
        )
    return Request(
        model=t.model or model,
        messages=messages,
        max_tokens=mt or max_tokens,
        temperature=temperature,
        json_mode=t.output == "json",
        json_schema=dict(t.schema) if t.schema is not None else None,
        extra=extra,
        attempt=attempt,
    )


def body_max_tokens(t: Task) -> int | None:
    b = t.body or {}
    v = b.get("max_tokens") or b.get("max_completion_tokens")
    return int(v) if v else None


def estimate(t: Task, default_max: int) -> int:
    """Tokens a call of `t` may use: its prompt estimated, plus its output limit."""
    prompt, output = estimate_parts(t, default_max)
    return prompt + output


def estimate_parts(t: Task, default_max: int) -> tuple[int, int]:
    """(prompt tokens estimated, output limit) of a call of `t`."""
    p = t.prompt
    if isinstance(p, str):
        text = p
    elif isinstance(p, list):
        text = " ".join(str(m.get("content", "")) for m in p)
    elif t.body is not None:
        text = json.dumps(t.body.get("messages", ""), ensure_ascii=False)
    else:
        text = ""
    return estimate_tokens(text), (t.max_tokens or body_max_tokens(t) or default_max)


def check_completion(t: Task, c: Completion) -> Any:
    """Turn a completion into a content fault when it cannot be used as it is; returns the
    parsed JSON for a json task (else None)."""
    if c.finish_reason == "length":
        raise TruncatedOutput(f"output cut at the token limit ({c.output_tokens} tokens)")
    text = c.text
    if not text or not text.strip():
        raise EmptyOutput("the answer was empty")
    data = None
    if t.output == "json":
        text = unfence(text)
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidOutput(f"the answer is not valid JSON ({exc})") from None
    if t.validate is not None:
        problem = t.validate(text)
        if problem:
            raise InvalidOutput(problem)
    return data


def unfence(text: str) -> str:
    """Models often wrap JSON in a ```json fence even when told not to: take it off."""
    s = text.strip()
    if s.startswith("```") and s.endswith("```") and s.count("```") == 2:
        s = s[3:-3]
        first, _, rest = s.partition("\n")
        return rest if first.strip().lower() in ("", "json") else s
    return text
