"""How close the fast path stays to the float32 reference: the measure its tests and benchmark report.

For each prompt the reference (transformers, float32, adapter active) decodes greedily; the fast engine is
then fed the same tokens (teacher forcing), so every step compares the two on the same context:
- ``agree``: how many leading greedy tokens the fast engine picks exactly as the reference did;
- ``dlogp``: |log p_ref(token) - log p_fast(token)| of each reference token (nats);
- ``margin_misses``: steps where the fast engine's top token differs although the reference's top two
  logits were at least ``margin`` apart (a near tie may flip under any rounding; a clear lead must not);
- ``miss_margins``: the reference's top-two gap at every step where the fast engine's top token differs (an
  exact float32 engine may differ only at ties within summation-order noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vichat.fast.gemma import GemmaFast


@dataclass
class Fidelity:
    agree: list[int] = field(default_factory=list)  # per prompt
    steps: list[int] = field(default_factory=list)  # per prompt: reference tokens (< n at its end)
    dlogp: list[float] = field(default_factory=list)  # per token, all prompts
    margin_misses: int = 0
    miss_margins: list[float] = field(default_factory=list)

    @property
    def mean_dlogp(self) -> float:
        return sum(self.dlogp) / len(self.dlogp) if self.dlogp else 0.0

    @property
    def max_dlogp(self) -> float:
        return max(self.dlogp, default=0.0)

    def summary(self) -> str:
        return (
            f"greedy tokens equal to the float32 reference {self.agree} of {self.steps}; per-token |dlogp| "
            f"mean {self.mean_dlogp:.4f}, max {self.max_dlogp:.4f}; clear-lead misses {self.margin_misses}; "
            f"reference top-two gaps where the top token differs {[f'{m:.2e}' for m in self.miss_margins]}"
        )


@torch.inference_mode()
def reference_run(model, prompt_ids: list[int], n: int) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens of the reference model after the prompt, and its float32 logits at each of them."""
    out = model.generate(
        input_ids=torch.tensor([prompt_ids]),
        attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
        max_new_tokens=n,
        do_sample=False,
        repetition_penalty=None,
        temperature=None,
        top_k=None,
        top_p=None,
        pad_token_id=model.generation_config.eos_token_id,
    )
    tokens = out[0, len(prompt_ids) :].tolist()
    logits = model(input_ids=out[:, :-1]).logits[0, len(prompt_ids) - 1 :].float()
    return tokens, logits


@torch.inference_mode()
def engine_logits(engine: GemmaFast, lora, prompt_ids: list[int], tokens: list[int]) -> torch.Tensor:
    """The engine's logits at each step when fed ``tokens`` after the prompt."""
    cache = engine.new_cache(len(prompt_ids) + len(tokens))
    rows = [engine.forward(prompt_ids, cache, lora)]
    rows += [engine.forward([t], cache, lora) for t in tokens[:-1]]
    return torch.stack(rows)


def compare(
    engines: dict[str, GemmaFast],
    model,
    adapter: str | None,
    prompt_ids: list[list[int]],
    n: int = 24,
    margin: float = 0.5,
) -> dict[str, Fidelity]:
    """Compare each engine with ``model`` (whose active adapter must be ``adapter``) on each prompt."""
    results = {name: Fidelity() for name in engines}
    for ids in prompt_ids:
        tokens, ref = reference_run(model, ids, n)
        target = torch.tensor(tokens)[:, None]
        top2 = ref.topk(2, dim=-1).values
        gap = top2[:, 0] - top2[:, 1]
        clear = gap >= margin
        ref_logp = torch.log_softmax(ref, -1).gather(1, target)
        for name, engine in engines.items():
            fast = engine_logits(engine, engine.lora_pack(model, adapter), ids, tokens)
            picked = fast.argmax(-1)
            result = results[name]
            wrong = (picked != target[:, 0]).tolist()
            result.agree.append(wrong.index(True) if True in wrong else len(tokens))
            result.steps.append(len(tokens))
            d = ref_logp - torch.log_softmax(fast, -1).gather(1, target)
            result.dlogp += d.abs().squeeze(1).tolist()
            result.margin_misses += int((clear & (picked != target[:, 0])).sum())
            result.miss_margins += gap[picked != target[:, 0]].tolist()
    return results
