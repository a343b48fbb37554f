"""Cost estimates: price look-up, the --price override, and the token estimate."""

import pytest

from eval.cost import PRICES, estimate, estimate_tokens, price_for
from vichat.errors import ViChatError


def test_prices_by_longest_prefix():
    assert price_for("gpt-4") == PRICES["gpt-4"]
    assert price_for("gpt-4-0613") == PRICES["gpt-4"]
    assert price_for("gpt-4o-mini-2024-07-18") == PRICES["gpt-4o-mini"]
    assert price_for("gpt-4o") == PRICES["gpt-4o"]
    assert price_for("my-local-judge") is None


def test_price_override():
    assert price_for("anything", "1.5,3") == (1.5, 3.0)
    for bad in ("1", "a,b", "-1,2"):
        with pytest.raises(ViChatError, match="--price"):
            price_for("gpt-4", bad)


def test_estimate_counts_calls_tokens_and_dollars():
    messages = [
        {"role": "system", "content": "x" * 30},
        {"role": "user", "content": "ộ" * 10},
    ]  # 30 + 30 bytes
    assert estimate_tokens("ộ" * 10) == 10
    e = estimate([messages, messages], (30.0, 60.0))
    assert e.calls == 2 and e.prompt_tokens == 2 * (10 + 10 + 2 * 10)
    assert e.usd == pytest.approx((e.prompt_tokens * 30 + e.completion_tokens * 60) / 1e6)
    assert "2 calls to gpt-4" in e.describe("gpt-4")
    assert "pass --price" in estimate([messages], None).describe("x")


@pytest.mark.parametrize("price", ["nan,1", "1,nan", "inf,2", "-1,2", "1", "a,b", "1,2,3"])
def test_bad_price_is_refused(price):
    with pytest.raises(ViChatError, match="--price"):
        price_for("gpt-4", price)
