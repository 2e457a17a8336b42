"""What a run spends, and the cap it may not pass: `--max-cost USD`, `--max-tokens N`.

A call starts only if what was spent plus the estimate of every call in flight plus this
call's estimate stays within the cap (an estimate is the prompt's tokens plus the output
limit, priced at the model's rate). A call that does not fit waits while others are in
flight: their estimates are replaced by what the provider reports once they answer (mostly
less), and it is tried again. When nothing is in flight and it still does not fit, the run
starts nothing new and ends `budget_exhausted`, resumable with a higher cap. So a run stops
within one call's estimate of its cap, and never passes it by more than the calls in flight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fanout.errors import ConfigError
from fanout.tasks import Result, Task


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float

    def __post_init__(self) -> None:
        if self.input < 0 or self.output < 0:
            raise ConfigError(f"a price must not be negative: {self}")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


#: list prices per million tokens (input, output) when this was written; a model is matched
#: exactly, else by the longest name its own name starts with ("claude-sonnet-4-20250514"
#: -> "claude-sonnet-4"). Override or add under `prices:` in fanout.yaml.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.5, 10.0),
    "gpt-4o-mini": Price(0.15, 0.6),
    "gpt-4.1": Price(2.0, 8.0),
    "gpt-4.1-mini": Price(0.4, 1.6),
    "gpt-4.1-nano": Price(0.1, 0.4),
    "o3": Price(2.0, 8.0),
    "o4-mini": Price(1.1, 4.4),
    "claude-opus-4": Price(15.0, 75.0),
    "claude-sonnet-4": Price(3.0, 15.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-3-5-sonnet": Price(3.0, 15.0),
    "claude-3-5-haiku": Price(0.8, 4.0),
    "claude-haiku-4": Price(1.0, 5.0),
    # the simulator's model is priced too, so a cap can be tried offline
    "sim-1": Price(1.0, 2.0),
}


class Prices:
    """A price table with prefix matching, looked up once per model name."""

    def __init__(self, table: Mapping[str, Price]) -> None:
        self._table = dict(table)
        self._found: dict[str, Price | None] = {}

    def of(self, model: str) -> Price | None:
        if model in self._found:
            return self._found[model]
        price = self._table.get(model)
        if price is None:
            names = [n for n in self._table if model.startswith(n)]
            price = self._table[max(names, key=len)] if names else None
        self._found[model] = price
        return price

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """Dollars for a call (0 for a model with no price)."""
        price = self.of(model)
        return 0.0 if price is None else price.cost(input_tokens, output_tokens)


class RunBudget:
    """One run's spend, and its caps (None: no cap of that kind)."""

    __slots__ = (
        "_inflight",
        "_prices",
        "_retired",
        "_settled_usd",
        "capped",
        "exhausted",
        "inflight_tokens",
        "inflight_usd",
        "max_cost_usd",
        "max_tokens",
        "spent_tokens",
    )

    def __init__(
        self,
        prices: Prices,
        *,
        max_cost_usd: float | None = None,
        max_tokens: int | None = None,
        spent_usd: float = 0.0,
        spent_tokens: int = 0,
    ) -> None:
        if max_cost_usd is not None and max_cost_usd <= 0:
            raise ConfigError(f"max cost ${max_cost_usd}: must be positive")
        if max_tokens is not None and max_tokens <= 0:
            raise ConfigError(f"max tokens {max_tokens}: must be positive")
        self._prices = prices
        self.max_cost_usd = max_cost_usd
        self.max_tokens = max_tokens
        self.capped = max_cost_usd is not None or max_tokens is not None
        self._settled_usd = spent_usd
        self.spent_tokens = spent_tokens
        #: model -> [input, output] tokens of results the run let go from memory
        self._retired: dict[str, list[int]] = {}
        self.inflight_usd = 0.0
        self.inflight_tokens = 0
        self._inflight: dict[int, tuple[float, int]] = {}  # task number -> its estimate
        self.exhausted = False

    @property
    def spent_usd(self) -> float:
        """Dollars spent: settled call by call when the run is capped; else worked out
        from the results when asked (see `account`), so the hot path adds nothing."""
        return self._settled_usd

    def account(self, results: Iterable[Result | None]) -> None:
        """An uncapped run's spend, from its results (those answered from the cache cost
        nothing): called when its figures are asked for."""
        if self.capped:
            return
        by_model = {m: list(u) for m, u in self._retired.items()}
        for r in results:
            if r is not None and r.attempts and r.model is not None:
                u = by_model.get(r.model)
                if u is None:
                    u = by_model[r.model] = [0, 0]
                u[0] += r.input_tokens
                u[1] += r.output_tokens
        cost = self._prices.cost
        self._settled_usd = sum(cost(m, u[0], u[1]) for m, u in by_model.items())
        self.spent_tokens = sum(u[0] + u[1] for u in by_model.values())

    def retire(self, r: Result) -> None:
        """`r` leaves the run's memory: `account` counts its tokens from here on."""
        if r.attempts and r.model is not None:
            u = self._retired.get(r.model)
            if u is None:
                u = self._retired[r.model] = [0, 0]
            u[0] += r.input_tokens
            u[1] += r.output_tokens

    def carry(self, model: str, input_tokens: int, output_tokens: int) -> None:
        """Tokens an earlier segment spent on results not in memory (a lean resume): as if
        each had been settled and then let go (`retire`)."""
        self.settle(-1, model, input_tokens, output_tokens)
        u = self._retired.get(model)
        if u is None:
            u = self._retired[model] = [0, 0]
        u[0] += input_tokens
        u[1] += output_tokens

    @property
    def in_flight(self) -> int:
        """Calls holding an estimate."""
        return len(self._inflight)

    def check_model(self, model: str) -> None:
        """Refuse a model a cost cap cannot price."""
        if self.max_cost_usd is not None and self._prices.of(model) is None:
            raise ConfigError(
                f"--max-cost needs the price of model {model!r}: add it under `prices:` in "
                f"fanout.yaml (e.g. prices: {{{model}: {{input: 2.5, output: 10}}}}, dollars "
                "per million tokens)"
            )

    def check_tasks(self, tasks: Iterable[Task], default_model: str) -> None:
        """Refuse tasks whose model a capped run cannot price (before any is recorded)."""
        if self.max_cost_usd is not None:
            for m in {t.model or str((t.body or {}).get("model") or default_model) for t in tasks}:
                self.check_model(m)

    def admit(self, n: int, model: str, input_tokens: int, output_tokens: int) -> bool:
        """Whether call of task `n` may start now (then its estimate is held until
        `settle`); False once the cap would be passed."""
        usd = self._prices.cost(model, input_tokens, output_tokens)
        tokens = input_tokens + output_tokens
        cap_usd, cap_tokens = self.max_cost_usd, self.max_tokens
        if (cap_usd is not None and self._settled_usd + self.inflight_usd + usd > cap_usd) or (
            cap_tokens is not None
            and self.spent_tokens + self.inflight_tokens + tokens > cap_tokens
        ):
            return False  # (the ledger decides whether the run is out of budget)
        self._inflight[n] = (usd, tokens)
        self.inflight_usd += usd
        self.inflight_tokens += tokens
        return True

    def settle(
        self,
        n: int,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        asked: str | None = None,
    ) -> None:
        """The call of task `n` ended having used these tokens (0 and 0: it was not billed).
        `model` is what the provider says answered; `asked`, the model the call named, prices
        it when the provider's name has no price (e.g. a dated variant)."""
        held = self._inflight.pop(n, None)
        if held is not None:
            self.inflight_usd -= held[0]
            self.inflight_tokens -= held[1]
        if input_tokens or output_tokens:
            self.spent_tokens += input_tokens + output_tokens
            if model is not None and asked is not None and self._prices.of(model) is None:
                model = asked
            if model is not None:
                self._settled_usd += self._prices.cost(model, input_tokens, output_tokens)
