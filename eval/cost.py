"""What a judge run will cost, printed before any call.

Token counts are estimates made without the judge's tokenizer: UTF-8 bytes / 3 for the prompt (high on
purpose: Vietnamese diacritics cost more tokens than English letters) and a fixed allowance per verdict.
Prices are USD per million tokens (input, output) as listed by OpenAI when this was written; pass
``--price IN,OUT`` for another model or a changed price list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType

from vichat import checks
from vichat.errors import SettingsError, ViChatError

BYTES_PER_TOKEN = 3.0
COMPLETION_TOKENS_PER_CALL = 250  # a score line and a paragraph of explanation
MESSAGE_OVERHEAD_TOKENS = 10

PRICES = MappingProxyType(
    {
        "gpt-4": (30.0, 60.0),
        "gpt-4-32k": (60.0, 120.0),
        "gpt-4-turbo": (10.0, 30.0),
        "gpt-4o": (2.5, 10.0),
        "gpt-4o-mini": (0.15, 0.6),
        "gpt-4.1": (2.0, 8.0),
        "gpt-4.1-mini": (0.4, 1.6),
        "gpt-4.1-nano": (0.1, 0.4),
        "gpt-3.5-turbo": (0.5, 1.5),
    }
)


def price_for(model: str, override: str | None = None) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens: ``override`` "IN,OUT", else the longest listed prefix of ``model``."""
    if override:
        parts = override.split(",")
        if len(parts) != 2:
            raise ViChatError(f"--price must be 'IN,OUT' in USD per 1M tokens, e.g. 30,60; got {override!r}")
        try:
            inp, out = (checks.number("--price", v, minimum=0, maximum=1e6) for v in parts)
        except SettingsError as e:
            raise SettingsError(f"{e}; --price is 'IN,OUT' in USD per 1M tokens, e.g. 30,60") from None
        return inp, out
    matches = [name for name in PRICES if model == name or model.startswith(name + "-")]
    return PRICES[max(matches, key=len)] if matches else None


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


@dataclass(frozen=True)
class CostEstimate:
    calls: int
    prompt_tokens: int
    completion_tokens: int
    price: tuple[float, float] | None

    @property
    def usd(self) -> float | None:
        return usd(self.prompt_tokens, self.completion_tokens, self.price)

    def describe(self, model: str) -> str:
        tokens = f"~{self.prompt_tokens:,} prompt + ~{self.completion_tokens:,} completion tokens"
        if self.price is None:
            cost = f"price of {model!r} unknown: pass --price IN,OUT (USD per 1M tokens)"
        else:
            cost = f"~${self.usd:,.2f} at ${self.price[0]:g}/${self.price[1]:g} per 1M tokens"
        return f"{self.calls} calls to {model}: {tokens}, {cost}"


def usd(prompt_tokens: int, completion_tokens: int, price: tuple[float, float] | None) -> float | None:
    """What the tokens cost in USD at ``price`` (input, output per 1M tokens); None when the price is unknown."""
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6


def estimate(prompts: Iterable[list[dict]], price: tuple[float, float] | None) -> CostEstimate:
    """The estimate for one call per message list in ``prompts``."""
    calls = prompt_tokens = 0
    for messages in prompts:
        calls += 1
        prompt_tokens += sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)
    return CostEstimate(calls, prompt_tokens, calls * COMPLETION_TOKENS_PER_CALL, price)


def spent(prompt_tokens: int, completion_tokens: int, price: tuple[float, float] | None) -> str:
    """The real usage the endpoint reported, and its cost when the price is known."""
    text = f"{prompt_tokens:,} prompt + {completion_tokens:,} completion tokens"
    if price is not None:
        text += f" (${usd(prompt_tokens, completion_tokens, price):,.2f})"
    return text
