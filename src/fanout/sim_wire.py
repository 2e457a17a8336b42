"""The simulator's wire formats: OpenAI Chat Completions and Anthropic Messages requests
read into a `Request`, and completions written back as those APIs' JSON and SSE shapes."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from fanout.errors import ProviderError
from fanout.providers.base import Completion, Request

_DUMP: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


FINGERPRINT = {"system_fingerprint": "fp_fanout_sim"}


EPOCH = "2025-01-01T00:00:00Z"


#: wire fields read by the server; every other field goes into `Request.extra` (it seeds the
#: answer exactly as `extra` does in-process)
OPENAI_FIELDS = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "temperature"}
    | {"response_format", "stream", "stream_options", "user", "metadata", "store"}
)


ANTHROPIC_FIELDS = frozenset(
    {"model", "messages", "max_tokens", "temperature", "system", "stream", "metadata"}
    | {"output_config", "output_format", "tools", "tool_choice"}
)


class BadRequest(Exception):
    pass


def int_field(body: dict[str, Any], *names: str, required: bool = False) -> int | None:
    for name in names:
        if (value := body.get(name)) is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadRequest(f"{name}: expected an integer >= 1, got {value!r}")
            return value
    if required:
        raise BadRequest(f"{names[0]}: field required")
    return None


def common_request(body: dict[str, Any], max_tokens: int | None, system: Any = None) -> Request:
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: expected a non-empty string")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("messages: expected a list of message objects")
    if system:  # Anthropic's top-level system prompt reads like a leading system message
        messages = [{"role": "system", "content": system}, *messages]
    if not messages:
        raise BadRequest("messages: expected at least one message")
    temperature = body.get("temperature")
    if temperature is not None and not isinstance(temperature, int | float):
        raise BadRequest(f"temperature: expected a number, got {temperature!r}")
    req = Request(model=model, messages=messages, temperature=temperature)
    if max_tokens is not None:
        req.max_tokens = max_tokens
    return req


def openai_request(body: dict[str, Any]) -> Request:
    req = common_request(body, int_field(body, "max_completion_tokens", "max_tokens"))
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        req.json_schema = schema if isinstance(schema, dict) else {}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        req.json_mode = True
    req.extra = {k: v for k, v in body.items() if k not in OPENAI_FIELDS}
    return req


def anthropic_request(body: dict[str, Any]) -> tuple[Request, str | None]:
    """The request and, when a tool is forced by `tool_choice`, the tool's name."""
    req = common_request(body, int_field(body, "max_tokens", required=True), body.get("system"))
    tool: str | None = None
    config = body.get("output_config") or {}
    for fmt in (config.get("format"), body.get("output_format")):  # the latter: older betas
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            schema = fmt.get("schema")
            req.json_schema = schema if isinstance(schema, dict) else {}
    choice, tools = body.get("tool_choice") or {}, body.get("tools")
    if choice.get("type") in ("tool", "any") and isinstance(tools, list):
        want = choice.get("name") if choice.get("type") == "tool" else None
        for t in tools:
            if isinstance(t, dict) and want in (None, t.get("name")) and "input_schema" in t:
                tool, schema = str(t.get("name")), t["input_schema"]
                req.json_schema = schema if isinstance(schema, dict) else {}
                break
        else:
            raise BadRequest(f"tool_choice: no tool with an input_schema named {want!r}")
    req.extra = {k: v for k, v in body.items() if k not in ANTHROPIC_FIELDS}
    return req, tool


def model_info(model: str) -> dict[str, Any]:
    """A model entry both SDKs accept (OpenAI `Model`, Anthropic `ModelInfo`)."""
    openai_fields = {"id": model, "object": "model", "created": 1735689600, "owned_by": "fanout"}
    anthropic_fields = {"type": "model", "display_name": f"fanout simulator ({model})"}
    return {**openai_fields, **anthropic_fields, "created_at": EPOCH, "lifecycle": "active"}


def openai_usage(done: Completion) -> dict[str, int]:
    i, o = done.input_tokens, done.output_tokens
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def openai_completion(cid: str, done: Completion) -> dict[str, Any]:
    message = {"role": "assistant", "content": done.text, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": done.finish_reason}
    head = {"id": cid, "object": "chat.completion", "created": int(time.time())}
    usage = openai_usage(done)
    return {**head, "model": done.model, "choices": [choice], "usage": usage, **FINGERPRINT}


def stop_reason(done: Completion, tool: str | None) -> str:
    if done.finish_reason == "length":
        return "max_tokens"
    return "end_turn" if tool is None else "tool_use"


def message_envelope(
    mid: str, model: str, content: list[Any], stop: Any, usage: Any
) -> dict[str, Any]:
    """An Anthropic `Message` (the whole answer, or the `message_start` of a stream)."""
    head = {"id": mid, "type": "message", "role": "assistant", "model": model}
    return {**head, "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage}


def tool_use(mid: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{mid[4:]}", "name": name, "input": arguments}


def anthropic_message(mid: str, done: Completion, tool: str | None) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if tool is not None and done.finish_reason == "stop":
        with contextlib.suppress(ValueError):  # an empty answer (injected fault) is no tool call
            content.append(tool_use(mid, tool, json.loads(done.text)))
    if not content and done.text:
        content.append({"type": "text", "text": done.text})
    usage = {"input_tokens": done.input_tokens, "output_tokens": done.output_tokens}
    is_tool = bool(content) and content[0]["type"] == "tool_use"
    return message_envelope(
        mid, done.model, content, stop_reason(done, tool if is_tool else None), usage
    )


class OpenAISse:
    """One streamed answer as `chat.completion.chunk` server-sent events."""

    def __init__(self, cid: str, model: str, usage: bool) -> None:
        self.usage = usage
        self.base: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk"}
        self.base.update(created=int(time.time()), model=model, **FINGERPRINT)
        if usage:
            self.base["usage"] = None
        self._pre, self._post = sse_template(self._chunk({"content": ""}), '"content":""')

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return f"data: {_DUMP({**self.base, 'choices': [choice]})}\n\n".encode()

    def head(self, input_tokens: int) -> bytes:
        return self._chunk({"role": "assistant", "content": "", "refusal": None})

    def delta(self, text: str) -> bytes:
        return self._pre + _DUMP(text).encode() + self._post

    def tail(self, done: Completion) -> bytes:
        out = self._chunk({}, done.finish_reason)
        if self.usage:
            last = {**self.base, "choices": [], "usage": openai_usage(done)}
            out += f"data: {_DUMP(last)}\n\n".encode()
        return out + b"data: [DONE]\n\n"

    def error(self, err: ProviderError) -> bytes:
        error = {"message": err.message, "type": "timeout", "param": None, "code": None}
        return f"data: {_DUMP({'error': error})}\n\n".encode()


def sse_event(kind: str, **data: Any) -> bytes:
    return f"event: {kind}\ndata: {_DUMP({'type': kind, **data})}\n\n".encode()


def sse_template(event: bytes, hole: str) -> tuple[bytes, bytes]:
    """Split a rendered event at `hole` (`"key":""`) so each delta only encodes its text."""
    pre, post = event.split(hole.encode(), 1)
    return pre + hole[:-2].encode(), post


class AnthropicSse:
    """One streamed answer as Anthropic's named server-sent events."""

    def __init__(self, mid: str, model: str, tool: str | None) -> None:
        self.mid, self.model, self.tool = mid, model, tool
        delta = {"type": "text_delta", "text": ""}
        if tool is not None:
            delta = {"type": "input_json_delta", "partial_json": ""}
        hole = '"text":""' if tool is None else '"partial_json":""'
        self._pre, self._post = sse_template(
            sse_event("content_block_delta", index=0, delta=delta), hole
        )

    def head(self, input_tokens: int) -> bytes:
        usage = {"input_tokens": input_tokens, "output_tokens": 1}
        message = message_envelope(self.mid, self.model, [], None, usage)
        block = tool_use(self.mid, self.tool, {}) if self.tool else {"type": "text", "text": ""}
        return (
            sse_event("message_start", message=message)
            + sse_event("content_block_start", index=0, content_block=block)
            + sse_event("ping")
        )

    def delta(self, text: str) -> bytes:
        return self._pre + _DUMP(text).encode() + self._post

    def tail(self, done: Completion) -> bytes:
        delta = {"stop_reason": stop_reason(done, self.tool), "stop_sequence": None}
        usage = {"input_tokens": done.input_tokens, "output_tokens": done.output_tokens}
        return (
            sse_event("content_block_stop", index=0)
            + sse_event("message_delta", delta=delta, usage=usage)
            + sse_event("message_stop")
        )

    def error(self, err: ProviderError) -> bytes:
        return sse_event("error", error={"type": "timeout_error", "message": err.message})
