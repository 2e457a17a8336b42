"""`sim`: an offline, in-process LLM simulator (spec C4).

Answers are derived from the prompt (same request, same text; CJK prompts get Chinese-looking
answers), with token usage, latency (base + per output token, times a jitter factor), JSON
answers that validate against the request's schema, injected faults at configured rates, and
RPM/TPM limits enforced with GCRA. Fault and jitter draws are keyed by (seed, body hash,
attempt), so a run is reproducible and a retry draws again. Only `asyncio.sleep` waits.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from fanout.errors import (
    ConfigError,
    Overloaded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ServerError,
)
from fanout.providers.base import Chunk, Completion, Request, chat_body, estimate_tokens
from fanout.providers.sim_limits import DEFAULT_SHAPE, DEFAULT_WINDOW_S, SHAPES, make_budget

if TYPE_CHECKING:
    from fanout.providers.spec import ProviderSpec

DEFAULT_SEED = 0
DEFAULT_BASE_LATENCY_S = 0.05
DEFAULT_PER_TOKEN_S = 0.0
DEFAULT_JITTER = 0.1
DEFAULT_RETRY_AFTER_S = 1.0
DEFAULT_HANG_S = 3600.0
DEFAULT_MIN_OUTPUT_TOKENS = 30
DEFAULT_MAX_OUTPUT_TOKENS = 200
#: fault kinds, in the order their rates are stacked on one uniform draw per attempt
FAULT_KINDS: tuple[str, ...] = ("429", "500", "529", "timeout", "truncated", "empty")
#: share of its latency a failing call spends before the error is raised
FAULT_LATENCY_SHARE = 0.25
_MAX_STREAM_CHUNKS = 16
_ERRORS: dict[str, tuple[type[ProviderError], str]] = {
    "429": (RateLimited, "rate limit"),
    "500": (ServerError, "server error"),
    "529": (Overloaded, "overloaded"),
}

_CJK_RE = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_EN_TEXT = (
    "the a of to and in is that it for as with on by this be are from at or an which can we "
    "model answer idea each step first next then because example result point note question "
    "concept method simple clear data value system process change part whole reason means "
    "shows helps makes gives learn learning understand explain compare structure pattern level "
    "key core basic deep important useful common general specific case rule form way time "
    "work use number order group set list map link path memory context detail summary"
)
_ZH_TEXT = (
    "学习 知识 问题 方法 理解 概念 例子 重要 我们 可以 需要 通过 这个 一个 因为 所以 如果 "
    "就是 进行 分析 结构 关系 基础 思考 解释 记忆 练习 过程 结果 原因 部分 内容 能够 应该 "
    "发现 变化 特点 作用 提高 系统 逻辑 关键 核心 步骤 目标 的 是 在 和 了 也 有 不 很 都 "
    "中 对 把 从 更 就"
)
_EN_WORDS: tuple[str, ...] = tuple(_EN_TEXT.split())
_ZH_WORDS: tuple[str, ...] = tuple(_ZH_TEXT.split())
_DUMP: Callable[[Any], str] = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), default=str
).encode


@dataclass(slots=True, kw_only=True)
class SimConfig:
    """How the simulator behaves. Read once when a `SimProvider` is built."""

    seed: int = DEFAULT_SEED
    base_latency_s: float = DEFAULT_BASE_LATENCY_S
    per_token_s: float = DEFAULT_PER_TOKEN_S
    jitter: float = DEFAULT_JITTER
    faults: dict[str, float] = field(default_factory=dict)
    retry_after_s: float = DEFAULT_RETRY_AFTER_S
    hang_s: float = DEFAULT_HANG_S
    rpm: float | None = None
    tpm: float | None = None
    #: how the rpm/tpm budgets are enforced: one of `sim_limits.SHAPES`
    limit_shape: str = DEFAULT_SHAPE
    #: the window of the `fixed`, `bucket` and `sliding` shapes (a minute, as services use;
    #: tests shorten it)
    limit_window_s: float = DEFAULT_WINDOW_S
    min_output_tokens: int = DEFAULT_MIN_OUTPUT_TOKENS
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS

    def __post_init__(self) -> None:
        self.faults = _check_faults({str(k): v for k, v in self.faults.items()})
        for name in ("base_latency_s", "per_token_s", "retry_after_s", "hang_s"):
            if not 0.0 <= (value := getattr(self, name)) < math.inf:
                raise ValueError(f"SimConfig.{name} must be a finite number >= 0, got {value!r}")
        for name in ("rpm", "tpm"):
            if (value := getattr(self, name)) is not None and not 0.0 < value < math.inf:
                raise ValueError(f"SimConfig.{name} must be None or a number > 0, got {value!r}")
        if self.limit_shape not in SHAPES:
            raise ValueError(
                f"SimConfig.limit_shape {self.limit_shape!r}: use one of {', '.join(SHAPES)}"
            )
        if not 0.0 < self.limit_window_s < math.inf:
            raise ValueError(f"SimConfig.limit_window_s must be > 0, got {self.limit_window_s!r}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"SimConfig.jitter must be in [0, 1], got {self.jitter!r}")
        if not 1 <= self.min_output_tokens <= self.max_output_tokens:
            raise ValueError(
                "SimConfig needs 1 <= min_output_tokens <= max_output_tokens, got "
                f"{self.min_output_tokens} and {self.max_output_tokens}"
            )


class LatencyKwargs(TypedDict, total=False):
    """What `parse_latency` returns: keyword arguments for `SimConfig`."""

    base_latency_s: float
    per_token_s: float
    jitter: float


class SimProvider:
    """The simulator as a `Provider`. One instance is one simulated server: its RPM/TPM
    budget and its stats are shared by every call made through it."""

    name: str = "sim"
    streams: bool = True

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        by_hash: bool = True,
    ) -> None:
        self.config = cfg = config or SimConfig()
        self._clock = clock
        #: count answers by request hash (`stats()["by_request_hash"]`): about 170 bytes a
        #: distinct request, so off for the simulator a batch runs in its own process,
        #: whose stats nobody reads (a million lines: 170 MB of the process's peak)
        self._count_by_hash = by_hash
        self._fault_table: list[tuple[float, str]] = []
        acc = 0.0
        for kind in FAULT_KINDS:
            if cfg.faults.get(kind, 0.0) > 0.0:
                acc += cfg.faults[kind]
                self._fault_table.append((acc, kind))
        shape, window = cfg.limit_shape, cfg.limit_window_s
        self._rpm = make_budget(shape, cfg.rpm, window) if cfg.rpm else None
        self._tpm = make_budget(shape, cfg.tpm, window) if cfg.tpm else None
        self.reset_stats()

    def limiter_key(self, model: str) -> str:
        return f"sim:{model}"

    def body(self, request: Request) -> dict[str, Any]:
        return chat_body(request)

    def request_hash(self, request: Request) -> str:
        """The key of `stats()["by_request_hash"]`: sha256 hex of the canonical JSON body."""
        return body_hash(self.body(request))

    def fault_for(self, request: Request) -> str | None:
        """The fault this exact attempt draws (one of `FAULT_KINDS`), or None."""
        return self._draw(self.request_hash(request), request.attempt)[0]

    async def complete(self, request: Request) -> Completion:
        t0 = time.perf_counter()
        key, fault, done, latency = self._prepare(request)
        await self._fail(fault, latency)
        # the time spent making the answer is part of the modelled latency, as a server's is
        await asyncio.sleep(max(0.0, latency - (time.perf_counter() - t0)))
        return self._finish(key, done, t0)

    async def stream(self, request: Request) -> AsyncIterator[Chunk | Completion]:
        """Chunks spread over the latency, then the `Completion`. A `timeout` fault hangs
        after the first chunk (so a stream-idle timeout is what fires)."""
        t0 = time.perf_counter()
        key, fault, done, latency = self._prepare(request)
        if fault != "timeout":
            await self._fail(fault, latency)
        text = done.text
        n = min(_MAX_STREAM_CHUNKS, max(1, done.output_tokens // 8)) if text else 0
        step = latency / max(n, 1)
        size = -(-len(text) // n) if n else 0
        for i in range(n):
            await asyncio.sleep(step)
            yield Chunk(text[i * size : (i + 1) * size])
            await self._fail(fault, latency)  # a timeout hangs after the first chunk
        if not n:
            await asyncio.sleep(step)
        yield self._finish(key, done, t0)

    async def aclose(self) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {
            "requests_total": self._requests,
            "completed_total": self._completed,
            "rejected_429": self._rejected,
            "by_request_hash": dict(self._by_hash),
            "faults": dict(self._faults),
        }

    def rate_limits(self) -> dict[str, tuple[float, int, float]]:
        """For each configured limit (`"requests"`, `"tokens"`): its rate per minute, the units
        admitted right now without waiting, and seconds until the budget is full again."""
        now = self._clock()
        out: dict[str, tuple[float, int, float]] = {}
        for name, budget in (("requests", self._rpm), ("tokens", self._tpm)):
            if budget is not None:
                remaining, reset = budget.state(now)
                out[name] = (budget.per_minute, remaining, reset)
        return out

    def reset_stats(self) -> None:
        self._requests = self._completed = self._rejected = 0
        self._by_hash: dict[str, int] = {}
        self._faults: dict[str, int] = {}

    # -- internals ---------------------------------------------------------------------

    def _draw(self, key: str, attempt: int) -> tuple[str | None, float]:
        if not self._fault_table and not self.config.jitter:
            return None, 1.0  # nothing to draw: skip seeding a generator per call
        rng = random.Random(f"{self.config.seed}:{key}:{attempt}")
        u = rng.random()
        fault = next((kind for cum, kind in self._fault_table if u < cum), None)
        return fault, 1.0 + self.config.jitter * (2.0 * rng.random() - 1.0)

    def _prepare(self, request: Request) -> tuple[str, str | None, Completion, float]:
        """Admit (or reject) the call and work out its answer, fault and latency."""
        cfg = self.config
        self._requests += 1
        key = body_hash(self.body(request))
        now = self._clock()
        if self._rpm is not None and (wait := self._rpm.wait(now, 1.0)) > 0.0:
            self._reject(f"over {cfg.rpm:g} requests/minute", wait)
        prompt = request.prompt_text()
        input_tokens = estimate_tokens(prompt)
        text, finish = _answer(request, prompt, cfg)
        output_tokens = estimate_tokens(text)
        cost = input_tokens + output_tokens
        if self._tpm is not None and (wait := self._tpm.wait(now, cost)) > 0.0:
            self._reject(f"over {cfg.tpm:g} tokens/minute ({cost} asked)", wait)
        if self._rpm is not None:
            self._rpm.commit(now, 1.0)
        if self._tpm is not None:
            self._tpm.commit(now, cost)
        fault, factor = self._draw(key, request.attempt)
        if fault is not None:
            self._faults[fault] = self._faults.get(fault, 0) + 1
            if fault == "truncated":
                text, finish = _cut(text, max(1, output_tokens // 2)), "length"
                output_tokens = estimate_tokens(text)
            elif fault == "empty":
                text, finish, output_tokens = "", "stop", 0
        latency = (cfg.base_latency_s + output_tokens * cfg.per_token_s) * factor
        done = Completion(text, finish, input_tokens, output_tokens, request.model)
        return key, fault, done, latency

    def _reject(self, why: str, wait: float) -> None:
        self._rejected += 1
        raise RateLimited(
            f"sim: rate limited, {why}; retry after {wait:.3f}s", status=429, retry_after=wait
        )

    async def _fail(self, fault: str | None, latency: float) -> None:
        """Raise the injected error (after part of the latency), or hang on `timeout`."""
        hang = self.config.hang_s
        if fault == "timeout":
            await asyncio.sleep(hang)
            raise ProviderTimeout(f"sim: no answer after {hang:g}s (injected timeout)")
        if fault is not None and (error := _ERRORS.get(fault)) is not None:
            await asyncio.sleep(latency * FAULT_LATENCY_SHARE)
            cls, what = error
            retry_after = None if cls is ServerError else self.config.retry_after_s
            raise cls(f"sim: injected {fault} {what}", status=int(fault), retry_after=retry_after)

    def _finish(self, key: str, done: Completion, t0: float) -> Completion:
        self._completed += 1
        if self._count_by_hash:
            self._by_hash[key] = self._by_hash.get(key, 0) + 1
        done.latency_s = time.perf_counter() - t0
        return done


def body_hash(body: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of a request body (sorted keys, no spaces)."""
    return hashlib.sha256(_DUMP(body).encode()).hexdigest()


def _answer(request: Request, prompt: str, cfg: SimConfig) -> tuple[str, str]:
    """The answer text (cut to `max_tokens`) and its finish reason, derived from the prompt,
    the seed and `request.extra` (so callers can ask for distinct samples)."""
    seed_text = f"{cfg.seed}\x00{prompt}\x00{_DUMP(request.extra) if request.extra else ''}"
    rng = random.Random(hashlib.blake2b(seed_text.encode(errors="surrogatepass")).digest())
    zh = _CJK_RE.search(prompt) is not None
    target = rng.randint(cfg.min_output_tokens, cfg.max_output_tokens)
    chars = _requested_chars(prompt)
    if chars is not None:  # follow a length instruction the way a model roughly would
        n = rng.randint(*chars)
        target = n if zh else max(1, n // 4)
    if request.json_schema:
        text = json.dumps(_instance(request.json_schema, rng, zh), ensure_ascii=False)
    elif request.json_schema is not None or request.json_mode:
        obj = {"answer": _prose(rng, max(1, target // 4), zh), "confidence": rng.randint(1, 99)}
        text = json.dumps(obj, ensure_ascii=False)
    else:
        text = _prose(rng, target, zh)
        if _TABLE_RE.search(prompt):
            text = _table(rng, zh) + "\n\n" + text
    if estimate_tokens(text) > request.max_tokens:
        return _cut(text, request.max_tokens), "length"
    return text, "stop"


_UNIT = r"\s*(?:characters|chars|字)"
_RANGE_RE = re.compile(r"(\d{2,5})\s*(?:to|-|–|—|~|至|到)\s*(\d{2,5})" + _UNIT, re.IGNORECASE)
_AT_LEAST_RE = re.compile(r"(?:at least|至少)\s*(\d{2,5})" + _UNIT, re.IGNORECASE)
_TABLE_RE = re.compile(r"markdown table|表格", re.IGNORECASE)


def _requested_chars(prompt: str) -> tuple[int, int] | None:
    """A length the prompt asks for ("800 to 1200 characters", "at least 1500 字")."""
    if m := _RANGE_RE.search(prompt):
        lo, hi = sorted((int(m.group(1)), int(m.group(2))))
        return lo, hi
    if m := _AT_LEAST_RE.search(prompt):
        n = int(m.group(1))
        return n, n + n // 2
    return None


def _table(rng: random.Random, zh: bool, rows: int = 4) -> str:
    """A small Markdown table, for prompts that ask for one."""
    cols = 3

    def cell() -> str:
        return _phrase(rng, zh).replace("|", "/")

    head = "| " + " | ".join(cell() for _ in range(cols)) + " |"
    sep = "| " + " | ".join("---" for _ in range(cols)) + " |"
    body = ["| " + " | ".join(cell() for _ in range(cols)) + " |" for _ in range(rows)]
    return "\n".join([head, sep, *body])


def _prose(rng: random.Random, target: int, zh: bool) -> str:
    """Sentences from the pool until the text is about `target` tokens."""
    pool, rand = (_ZH_SENTENCES if zh else _EN_SENTENCES), rng.random
    limit = target - 1 if zh else 4 * (target - 1)  # length of pure CJK / ASCII text
    parts: list[str] = []
    size = 0
    while size < limit or not parts:
        parts.append(s := pool[int(rand() * len(pool))])
        size += len(s) + (not zh)
    if (over := size - limit) > 1 and len(parts) > 1:  # trim the last one near the target
        keep = parts.pop()[:-over].rstrip("，, ")
        if zh and len(keep) > 1:
            parts.append(keep[:-1] + "。")
        elif not zh and " " in keep:
            parts.append(keep.rsplit(" ", 1)[0].rstrip(",") + ".")
    return ("" if zh else " ").join(parts)


def _make_sentences(zh: bool, count: int = 256) -> tuple[str, ...]:
    """A fixed pool of sentences built at import, so answers only pick from it."""
    rng = random.Random(0x5EED)
    words = _ZH_WORDS if zh else _EN_WORDS
    out: list[str] = []
    for _ in range(count):
        ws = rng.choices(words, k=rng.randint(4, 14))
        if len(ws) > 6:
            ws[len(ws) // 2] += "，" if zh else ","
        if zh:
            out.append("".join(ws) + rng.choice("。。。。！？"))
        else:
            out.append(" ".join(ws).capitalize() + ".")
    return tuple(out)


_EN_SENTENCES = _make_sentences(zh=False)
_ZH_SENTENCES = _make_sentences(zh=True)


def _phrase(rng: random.Random, zh: bool, min_len: int = 0) -> str:
    words = _ZH_WORDS if zh else _EN_WORDS
    out = ("" if zh else " ").join(rng.choices(words, k=rng.randint(2, 6)))
    while len(out) < min_len:
        out += ("" if zh else " ") + words[int(rng.random() * len(words))]
    return out


def _instance(schema: Any, rng: random.Random, zh: bool) -> Any:
    """A deterministic value that validates against a (simple) JSON schema."""
    if not isinstance(schema, dict):
        return _phrase(rng, zh)
    if "const" in schema:
        return schema["const"]
    if isinstance(enum := schema.get("enum"), list) and enum:
        return enum[int(rng.random() * len(enum))]
    for key in ("anyOf", "oneOf"):
        if isinstance(options := schema.get(key), list) and options:
            return _instance(options[0], rng, zh)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        obj = {k: _instance(v, rng, zh) for k, v in props.items()}
        for k in schema.get("required") or ():
            obj.setdefault(k, _phrase(rng, zh))
        _sum_total(obj, props)
        return obj
    if kind == "array":
        lo = int(schema.get("minItems", 1))
        hi = int(schema.get("maxItems", max(lo, 3)))
        return [_instance(schema.get("items", {}), rng, zh) for _ in range(rng.randint(lo, hi))]
    if kind in ("integer", "number"):
        mn, mx = schema.get("minimum"), schema.get("maximum")
        low = float(mn) if mn is not None else (0.0 if mx is None or mx >= 0 else mx - 100.0)
        high = float(mx) if mx is not None else low + 100.0
        if kind == "integer":
            return rng.randint(math.ceil(low), max(math.ceil(low), math.floor(high)))
        return min(max(round(low + rng.random() * (high - low), 2), low), high)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    text = _phrase(rng, zh, int(schema.get("minLength", 0)))
    return text[: int(schema["maxLength"])] if "maxLength" in schema else text


def _sum_total(obj: dict[str, Any], props: Mapping[str, Any]) -> None:
    """An integer `total` described as a sum (the scoring agent's "The sum of the four
    dimensions") is the sum of the object's other integers, as a model asked would make it."""
    spec = props.get("total")
    if not isinstance(spec, dict) or spec.get("type") != "integer":
        return
    if "sum" not in str(spec.get("description", "")).lower():
        return
    parts = [
        v for k, v in obj.items() if k != "total" and isinstance(v, int) and not isinstance(v, bool)
    ]
    if parts:
        obj["total"] = sum(parts)


def _cut(text: str, tokens: int) -> str:
    """The longest prefix of `text` that `estimate_tokens` counts as at most `tokens`."""
    if tokens <= 0:
        return ""
    if estimate_tokens(text) <= tokens:
        return text
    if text.isascii():
        return text[: 4 * tokens - 1]
    lo, hi = 0, len(text)
    while lo < hi:  # estimate_tokens grows with the prefix: binary search
        mid = (lo + hi + 1) // 2
        if estimate_tokens(text[:mid]) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


def _check_faults(faults: dict[str, float]) -> dict[str, float]:
    allowed = ", ".join(FAULT_KINDS)
    out: dict[str, float] = {}
    for kind, rate in faults.items():
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; allowed: {allowed}")
        if not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate for {kind!r} must be a number in [0, 1], got {rate!r}")
        out[kind] = float(rate)
    if sum(out.values()) > 1.0 + 1e-9:
        raise ValueError(f"fault rates add up to {sum(out.values()):g}; the total must be <= 1")
    return out


def _number(value: str, what: str) -> float:
    try:
        return float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise ValueError(f"{what}: {value!r} is not a number") from None


def _pairs(text: str, what: str, example: str) -> Iterator[tuple[str, str, str]]:
    """(where, key, value) for each non-empty `key=value` of a comma-separated list."""
    seen: set[str] = set()
    for raw in text.split(","):
        if part := raw.strip():
            key, sep, value = (s.strip() for s in part.partition("="))
            if not sep or not key or not value:
                raise ValueError(f"{what} {part!r}: expected KEY=VALUE, e.g. {example!r}")
            if key in seen:
                raise ValueError(f"{what} {part!r}: {key!r} is given twice")
            seen.add(key)
            yield f"{what} {part!r}", key, value


def parse_faults(text: str) -> dict[str, float]:
    """`"429=0.05,500=0.02,timeout=1%"` -> `{"429": 0.05, "500": 0.02, "timeout": 0.01}`.
    Kinds: see `FAULT_KINDS`; rates in [0, 1] (or a percentage); `""` -> `{}`."""
    pairs = _pairs(text, "fault", "429=0.05,500=0.02")
    return _check_faults({key: _number(value, where) for where, key, value in pairs})


_DURATION_RE = re.compile(r"([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(ms|s)?", re.IGNORECASE)


def _duration(value: str, what: str) -> float:
    m = _DURATION_RE.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"{what}: {value!r} is not a duration >= 0 like '50ms', '0.05s', '0.05'")
    return float(m[1]) / (1000.0 if (m[2] or "").lower() == "ms" else 1.0)


def parse_latency(text: str) -> LatencyKwargs:
    """`"50ms"`, `"0.05"`, `"0.05s"` or `"base=50ms,per_token=1ms,jitter=0.2"` -> keyword
    arguments for `SimConfig` (`base_latency_s`, `per_token_s`, `jitter`; only those given)."""
    if "=" not in text:
        return {"base_latency_s": _duration(text, "latency")}
    out: LatencyKwargs = {}
    for where, key, value in _pairs(text, "latency", "base=50ms,per_token=1ms,jitter=0.2"):
        if key == "base":
            out["base_latency_s"] = _duration(value, where)
        elif key == "per_token":
            out["per_token_s"] = _duration(value, where)
        elif key == "jitter":
            if not 0.0 <= (jitter := _number(value, where)) <= 1.0:
                raise ValueError(f"{where}: jitter must be in [0, 1], got {value!r}")
            out["jitter"] = jitter
        else:
            raise ValueError(f"{where}: unknown key {key!r}; allowed: base, per_token, jitter")
    return out


def from_spec(
    name: str, spec: ProviderSpec, *, concurrency: int, env: Mapping[str, str] | None = None
) -> SimProvider:
    """Build from a fanout.yaml entry; `options` holds `SimConfig` fields (faults, latency)."""
    opts = dict(spec.options)
    try:
        faults = opts.get("faults")
        if isinstance(faults, str):
            opts["faults"] = parse_faults(faults)
        elif faults is not None and not isinstance(faults, dict):
            raise ValueError("faults: give KIND=RATE pairs, e.g. faults: 429=0.05,500=0.02")
        if "latency" in opts:
            latency = opts.pop("latency")
            if not isinstance(latency, str | int | float) or isinstance(latency, bool):
                raise ValueError("latency: give a duration such as 50ms")
            opts.update(parse_latency(str(latency)))
        return SimProvider(SimConfig(**opts), by_hash=False)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"provider {name!r} (sim): options: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    """An exception's message for a one-line error (a TypeError names the unknown field)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.replace("SimConfig.__init__() got an unexpected keyword argument", "unknown option")
